"""Lazy public names for facekit's subpackages (PEP 562 module ``__getattr__``)."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """``(__getattr__, __dir__)`` for ``package`` whose public names ``exports`` maps to
    ``"submodule:attribute"``: a name is imported from its submodule on first use and then
    kept in ``namespace`` (the package's globals), so importing the package stays cheap.
    An unknown name raises AttributeError, as for any module."""

    def __getattr__(name: str):
        try:
            module, _, attr = exports[name].partition(":")
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f"{package}.{module}"), attr)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
