"""issue 27 part 2: ``facekit models`` lists the catalogue, ``facekit models get NAME``
downloads into the cache (``$FACEKIT_MODELS``) with the sha256 checked and nothing partial
left on any failure, and a config may name a model (``model: scrfd_500m``).

The downloads come from a local HTTP server on 127.0.0.1 serving the shared SCRFD model
(the catalogue's ``scrfd_500m`` is that file); ``$FACEKIT_MODELS_URL`` points the catalogue
at it, in a ``facekit`` subprocess as a user would run it."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO

SCRFD_FILE = "scrfd_500m_bnkps.onnx"
SCRFD_SHA256 = "6c6ba7956684796d7d582bfa1ab95dfe01dd280159f6bff1e23c1bc32bcc8431"


class _Server:
    """A threaded HTTP server on 127.0.0.1: ``routes`` maps a URL path to ``(body, mode)``;
    mode ``full`` sends the body, ``truncate`` announces the whole body but closes after
    half, ``stall`` sends half and waits (until the server stops); other paths: 404."""

    def __init__(self):
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self.stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                if self.path not in server.routes:
                    self.send_error(404, "not here")
                    return
                body, mode = server.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "full":
                    self.wfile.write(body)
                    return
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                if mode == "stall":
                    server.stop.wait(60)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def scrfd_bytes(data_dir) -> bytes:
    p = data_dir / "models" / "detection" / SCRFD_FILE
    if not p.is_file():
        pytest.skip(f"{p} missing")
    return p.read_bytes()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache" / "models"  # not created: `get` makes it


def _env(cache: Path, mirror: str | None) -> dict:
    env = {**os.environ, "FACEKIT_MODELS": str(cache)}
    env.pop("FACEKIT_MODELS_URL", None)
    if mirror is not None:
        env["FACEKIT_MODELS_URL"] = mirror
    return env


def _cli(*args, cache: Path, mirror: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facekit.cli", *map(str, args)], capture_output=True, text=True,
                          env=_env(cache, mirror), cwd=cwd or REPO, timeout=120)


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode not in (0, None), r
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_get_downloads_checks_sha256_and_lists_cached(server, cache, scrfd_bytes):
    """issue 27 part 2: a good download lands in the cache with the catalogue's sha256, the
    listing shows it cached (and the others not), a second `get` reuses it."""
    server.routes[f"/{SCRFD_FILE}"] = (scrfd_bytes, "full")
    r = _cli("models", "get", "scrfd_500m", cache=cache, mirror=server.url)
    assert r.returncode == 0, r.stderr
    target = cache / SCRFD_FILE
    assert r.stdout.strip() == f"scrfd_500m: {target}"
    assert _files(cache) == [SCRFD_FILE]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == SCRFD_SHA256
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)

    listed = json.loads(_cli("models", "--json", cache=cache).stdout)
    assert listed["cache"] == str(cache)
    by_name = {m["name"]: m for m in listed["models"]}
    assert by_name["scrfd_500m"]["cached"] and by_name["scrfd_500m"]["path"] == str(target)
    assert by_name["scrfd_500m"]["sha256"] == SCRFD_SHA256 and by_name["scrfd_500m"]["size"] == len(scrfd_bytes)
    assert not any(m["cached"] for n, m in by_name.items() if n != "scrfd_500m")
    for m in by_name.values():  # what the issue asks every entry to say
        assert m["url"].startswith("https://") and m["licence"] and len(m["sha256"]) == 64 and m["size"] > 0
        assert m["sha256_source"]
    text = _cli("models", cache=cache).stdout
    assert "scrfd_500m  detector (plugin retinaface), 2.4 MiB: cached" in text
    assert "not downloaded: facekit models get yunet_2023mar" in text

    again = _cli("models", "get", "scrfd_500m", cache=cache, mirror=server.url)
    assert again.returncode == 0 and server.requests == [f"/{SCRFD_FILE}"]  # intact: not fetched again
    assert _cli("models", "path", "scrfd_500m", cache=cache).stdout.strip() == str(target)


def _failing_get(server, cache, route, expect: str, mirror=None):
    if route is not None:
        server.routes[f"/{SCRFD_FILE}"] = route
    r = _cli("models", "get", "scrfd_500m", "-q", cache=cache, mirror=mirror or server.url)
    line = _one_line_error(r)
    assert r.returncode == 1 and expect in line and "scrfd_500m" in line, line
    assert _files(cache) == [], "a failed download left files in the cache"
    return line


def test_get_wrong_hash(server, cache, scrfd_bytes):
    """issue 27 part 2: bytes of the right size but another sha256 are not kept."""
    bad = bytearray(scrfd_bytes)
    bad[1000] ^= 0xFF
    line = _failing_get(server, cache, (bytes(bad), "full"), "sha256")
    assert SCRFD_SHA256 in line and hashlib.sha256(bad).hexdigest() in line


def test_get_truncated(server, cache, scrfd_bytes):
    """issue 27 part 2: the server closes after half the announced bytes."""
    _failing_get(server, cache, (scrfd_bytes, "truncate"), f"stopped after {len(scrfd_bytes) // 2} of {len(scrfd_bytes)} bytes")


def test_get_not_found(server, cache):
    """issue 27 part 2: an HTTP error names the status."""
    _failing_get(server, cache, None, "HTTP 404")


def test_get_connection_refused(cache):
    """issue 27 part 2: no network (nothing listens on the port): one line, no cache file."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = _failing_get(None, cache, None, "Connection refused", mirror=f"http://127.0.0.1:{port}")
    assert f"127.0.0.1:{port}/{SCRFD_FILE}" in line


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_get_interrupted_leaves_nothing(server, cache, scrfd_bytes, sig, code):
    """issue 27 part 2: Ctrl-C (or SIGTERM) in the middle of a download removes the
    temporary file."""
    server.routes[f"/{SCRFD_FILE}"] = (scrfd_bytes, "stall")
    p = subprocess.Popen([sys.executable, "-m", "facekit.cli", "models", "get", "scrfd_500m", "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(cache, server.url), cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not [n for n in _files(cache) if n.endswith(".part")]:
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        time.sleep(0.3)  # the half that was sent is being written
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    line = _one_line_error(r)
    assert p.returncode == code and "nothing was written to the model cache" in line, (p.returncode, line)
    assert _files(cache) == []


def test_get_unknown_name(cache):
    """issue 27 part 2: an unknown name lists the known ones."""
    line = _one_line_error(_cli("models", "get", "scrfd_9000", cache=cache))
    assert "unknown model 'scrfd_9000'" in line and "scrfd_500m" in line


CONFIG = """\
sources:
  - plugin: folders
    root: {root}
detector:
  plugin: retinaface
  model: {model}
sinks:
  - plugin: folders
    path: out
output: {output}
"""


def _config(tmp_path: Path, data_dir: Path, model: str, extra: str = "") -> Path:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(CONFIG.format(root=data_dir / "images" / "identities", model=model, output=tmp_path / "run") + extra)
    return cfg


def test_config_names_a_cached_model(tmp_path, data_dir, cache, scrfd_bytes, monkeypatch):
    """issue 27 part 2: `model: scrfd_500m` is the cached file; paths work as before, and
    `./scrfd_500m` is a path, not the name."""
    cache.mkdir(parents=True)
    (cache / SCRFD_FILE).write_bytes(scrfd_bytes)
    cfg = _config(tmp_path, data_dir, "scrfd_500m")
    r = _cli("validate", cfg, cache=cache)
    assert r.returncode == 0, r.stderr

    from facekit.pipeline.config import load_config

    monkeypatch.setenv("FACEKIT_MODELS", str(cache))
    assert load_config(cfg).detector.params.model == cache / SCRFD_FILE

    shared = data_dir / "models" / "detection" / SCRFD_FILE
    assert load_config(_config(tmp_path, data_dir, str(shared))).detector.params.model == shared
    r = _cli("validate", _config(tmp_path, data_dir, "./scrfd_500m"), cache=cache)
    assert r.returncode == 2 and f"path does not exist: {tmp_path / 'scrfd_500m'}" in r.stderr, r.stderr


def test_config_uncached_name_is_a_config_error(tmp_path, data_dir, cache):
    """issue 27 part 2: a model name that is not downloaded is a config error naming the
    line and the command that downloads it (detector and recognizer alike)."""
    cfg = _config(tmp_path, data_dir, "scrfd_500m", "recognizer:\n  plugin: onnx\n  model: sface_2021dec\n")
    r = _cli("validate", cfg, cache=cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "error: invalid pipeline config:", r.stderr
    det = [ln for ln in lines if ln.strip().startswith(f"{cfg}:6:")]
    rec = [ln for ln in lines if ln.strip().startswith(f"{cfg}:13:")]
    assert len(det) == 1 and "run 'facekit models get scrfd_500m'" in det[0], r.stderr
    assert len(rec) == 1 and "run 'facekit models get sface_2021dec'" in rec[0], r.stderr
    assert not cache.exists(), "validation must not create the cache"
