"""Config overrides: ``--set KEY=VALUE`` on ``facekit run``/``validate``, and the settings
``facekit align`` builds its config from.

``KEY`` is a dotted path into the config (``detector.threshold``, ``sinks.0.path``): list
entries by their index, and ``N`` one past the last entry adds one (``sinks.2=...`` with two
sinks). ``VALUE`` is read as YAML (``yaml.safe_load``): ``0.6`` is a number, ``abc`` a string,
``[1, 2]`` a list, ``{plugin: folders, path: f}`` a mapping, an empty value or ``null`` is null.
The last key of a mapping may be new (``--set detector.threshold=0.6`` where the file leaves
the default); every key and index before it must be in the config.

An override changes the config's data before it is validated, so it is checked exactly as
the file is; an error at or below an overridden key names the ``--set`` (there is no line to
name): :func:`facekit.pipeline.config.parse_config` takes the overrides and does that.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import yaml

from facekit.errors import ConfigError, one_line

#: the longest ``--set`` accepted (a config is a few hundred bytes)
MAX_SET_CHARS = 64 * 1024


@dataclass(frozen=True)
class Override:
    """One setting laid over a config.

    Attributes:
        key: the dotted path's parts as given (``("sinks", "0", "path")``).
        value: the value (already parsed: YAML scalar, list or mapping).
        label: what errors name it by (``--set sinks.0.path=rec2``, ``SRC photos``).
    """

    key: tuple[str, ...]
    value: object
    label: str


def parse_set(text: str) -> Override:
    """Parse one ``--set KEY=VALUE`` (see the module doc).

    Raises:
        ConfigError: no ``=``, an empty key part, or a value that is not YAML (one line
            naming the ``--set``).
    """
    label = f"--set {text}"
    if len(text) > MAX_SET_CHARS:
        raise ConfigError(f"--set {text[:40]}...: {len(text)} characters is too long for a setting")
    key, eq, raw = text.partition("=")
    key = key.strip()
    parts = tuple(p.strip() for p in key.split("."))
    if not eq or not key or not all(parts):
        raise ConfigError(f"{label}: give KEY=VALUE with a dotted KEY (detector.threshold=0.6, sinks.0.path=rec2)")
    try:
        value = yaml.safe_load(raw)
    except RecursionError:
        raise ConfigError(f"{label}: value nested too deeply") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: the value is not YAML: {one_line(getattr(e, 'problem', None) or e)}") from None
    return Override(parts, value, label)


def dotted(path: tuple) -> str:
    """A config location as a ``--set`` key: ``("sinks", 0, "path")`` -> ``sinks.0.path``."""
    return ".".join(str(p) for p in path)


def apply_overrides(data: dict, overrides) -> list[tuple[tuple, str]]:
    """Set each override in ``data`` (a config's parsed YAML mapping), in order.

    The containers along each key are copied before they change, so a mapping the YAML
    shares through an alias (``*defaults``) changes only where the key points.

    Returns:
        ``(location, label)`` of each override, the location with list indexes as ints (as
        config errors locate keys): errors at or below it name the label.
    Raises:
        ConfigError: a key that is not in the config, an index past a list's end, a key
            below a value that is not a mapping or list (one line naming the override).
    """
    placed = []
    for ov in overrides:
        node, path = data, ()
        for i, part in enumerate(ov.key):
            last = i == len(ov.key) - 1
            if isinstance(node, dict):
                key = part
                if not last and key not in node:
                    where = dotted(path + (key,))
                    raise ConfigError(f"{ov.label}: the config has no {where!r} (give it whole: --set {where}=...)")
            elif isinstance(node, list):
                n = len(node)
                if not part.isdigit() or int(part) > n or (int(part) == n and not last):
                    entries = f"{dotted(path)}.0 to {dotted(path)}.{n - 1}" if n else "none"
                    raise ConfigError(f"{ov.label}: {dotted(path)} is a list of {n} entr{'y' if n == 1 else 'ies'} ({entries}; "
                                      f"{dotted(path)}.{n}=... adds one)")
                key = int(part)
            else:
                what = "null" if node is None else f"{type(node).__name__} {node!r}"
                raise ConfigError(f"{ov.label}: {dotted(path) or 'the config'} is {what}, not a mapping or list: "
                                  f"it has no {part!r}")
            path += (key,)
            if last:
                value = copy.deepcopy(ov.value)
                if isinstance(node, list) and key == len(node):
                    node.append(value)
                else:
                    node[key] = value
            else:
                child = node[key]
                if isinstance(child, (dict, list)):
                    child = copy.copy(child)  # an alias's other uses keep their values
                    node[key] = child
                node = child
        placed.append((path, ov.label))
    return placed
