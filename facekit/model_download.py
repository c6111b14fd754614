"""``facekit models get NAME``: download a catalogue model into the cache, all or nothing.

The file is written to a temporary ``.<file name>.*.part`` in the cache folder, its size
and sha256 checked against the catalogue, flushed to disk, then renamed into place; on
any error, Ctrl-C or SIGTERM (raised as ``SystemExit`` by the command line) the temporary
file is removed, so the cache only ever holds complete, verified files.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from facekit.errors import one_line
from facekit.formats.atomic import fsync_dir
from facekit.models import CatalogueModel, ModelError, cached_file, lookup, source_url

_CHUNK = 1 << 16


def sha256_of(path: Path) -> str:
    """SHA-256 (hex) of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(name: str, *, force: bool = False, progress: bool | None = None, timeout: float = 60.0) -> Path:
    """Download the catalogue model ``name`` into the cache and return its path.

    A file already cached whose sha256 is right is kept (unless ``force``). ``progress``:
    a tqdm bar on stderr (None: only when stderr is a terminal). ``timeout``: seconds a
    connection or a read may wait.

    Raises:
        ModelError: unknown name, the cache folder cannot be written, the server cannot be
            reached or answers an error, the download stops early, or its size or sha256
            is not the catalogue's; one line naming the model and the URL. Nothing is left
            in the cache.
    """
    model = lookup(name)
    dest = cached_file(model)
    if not force and dest.is_file() and dest.stat().st_size == model.size and sha256_of(dest) == model.sha256:
        return dest
    url = source_url(model)
    tmp = None
    try:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".part", dir=dest.parent)
        except OSError as e:
            raise ModelError(f"cannot write to the model cache {dest.parent}: {e.strerror or e}") from None
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(model, url, out, progress, timeout)
            out.flush()
            os.fsync(out.fileno())
        if digest != model.sha256:
            raise ModelError(
                f"{model.name}: the sha256 of the file from {url} is {digest}, not the catalogue's {model.sha256}; "
                "nothing was kept"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        tmp = None
        fsync_dir(dest.parent)
    except OSError as e:
        raise ModelError(f"{model.name}: cannot write {dest}: {one_line(e)}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return dest


def _fetch(model: CatalogueModel, url: str, out, progress: bool | None, timeout: float) -> str:
    """Stream ``url`` into ``out``; return the sha256 (hex) of exactly ``model.size`` bytes."""
    from tqdm import tqdm

    where = f"{model.name} from {url}"
    request = urllib.request.Request(url, headers={"User-Agent": "facekit-models"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the catalogue's https URL or the user's mirror
    except urllib.error.HTTPError as e:
        raise ModelError(f"cannot download {where}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise ModelError(f"cannot download {where}: {one_line(e.reason) if e.reason else one_line(e)}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise ModelError(f"cannot download {where}: {one_line(e) or type(e).__name__}") from None
    h = hashlib.sha256()
    n = 0
    with response, tqdm(total=model.size, unit="B", unit_scale=True, unit_divisor=1024, desc=model.name,
                        disable=(None if progress is None else not progress), file=sys.stderr, leave=False) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except http.client.IncompleteRead as e:
                n += len(e.partial)
                raise ModelError(
                    f"download of {where} stopped after {n} of {model.size} bytes (the connection closed); "
                    "nothing was kept"
                ) from None
            except (OSError, http.client.HTTPException) as e:
                raise ModelError(
                    f"download of {where} failed after {n} of {model.size} bytes: {one_line(e) or type(e).__name__}; "
                    "nothing was kept"
                ) from None
            if not chunk:
                break
            n += len(chunk)
            if n > model.size:
                raise ModelError(f"{where} is larger than the catalogue's {model.size} bytes; nothing was kept")
            h.update(chunk)
            out.write(chunk)
            bar.update(len(chunk))
    if n != model.size:
        raise ModelError(f"download of {where} stopped after {n} of {model.size} bytes; nothing was kept")
    return h.hexdigest()


__all__ = ["download", "sha256_of"]
