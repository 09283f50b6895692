"""``care-serve pull`` against a fake Hugging Face Hub on loopback (never the internet).

The fake hub answers what ``hf_hub_download`` asks: ``HEAD`` and ``GET`` on
``/{repo}/resolve/{revision}/{filename}`` with ``X-Repo-Commit``, ``ETag`` and
``Content-Length`` (and ``Range`` for resumed downloads); anything else is a 404
with the hub's ``X-Error-Code`` (``EntryNotFound``, ``RevisionNotFound``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from care_serve.backends import load_backend
from care_serve.cli import main
from care_serve.commands.pull import HUB_REPO, OFFICIAL_WEIGHTS
from care_serve.offline.importer import imagenet_labels, sha256_file
from care_serve.store import HubSource, ModelRepository, read_labels
from tests.helpers.paths import OFFICIAL_S0_CHECKPOINT

FIXTURE = OFFICIAL_S0_CHECKPOINT
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """A threading HTTP server on 127.0.0.1 serving ``files`` at revision ``main``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        self.cut_after: int | None = None  # drop the connection after this many bytes, once
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _file(self) -> bytes | str:
                """The file asked for, or the hub's X-Error-Code for a 404."""
                ranged = f" Range: {self.headers['Range']}" if self.headers.get("Range") else ""
                hub.requests.append(f"{self.command} {self.path}{ranged}")
                prefix = f"/{HUB_REPO}/resolve/"
                if not self.path.startswith(prefix):
                    return "RepoNotFound"
                revision, _, filename = self.path[len(prefix) :].partition("/")
                if revision not in ("main", COMMIT):
                    return "RevisionNotFound"
                return hub.files.get(filename, "EntryNotFound")

            def _headers(self, data: bytes | str) -> tuple[int, int]:
                if isinstance(data, str):  # a 404 as the real hub sends it
                    self.send_response(404)
                    self.send_header("X-Error-Code", data)
                    if data == "EntryNotFound":
                        self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return 0, 404
                start, status = 0, 200
                ranged = self.headers.get("Range", "")
                if ranged.startswith("bytes="):
                    start, status = int(ranged[6:].split("-")[0]), 206
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                return start, status

            def do_HEAD(self) -> None:
                self._headers(self._file())

            def do_GET(self) -> None:
                data = self._file()
                start, status = self._headers(data)
                if not isinstance(data, bytes) or status == 404:
                    return
                if hub.cut_after is not None:  # a connection lost mid-download
                    self.wfile.write(data[start : hub.cut_after])
                    self.wfile.flush()
                    hub.cut_after = None
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """S0's official-format fixture as care_s0 and (wrongly) as care_s1; HF_HOME in tmp_path."""
    data = FIXTURE.read_bytes()
    fake = FakeHub(
        {OFFICIAL_WEIGHTS["care_s0"].filename: data, OFFICIAL_WEIGHTS["care_s1"].filename: data}
    )
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    import huggingface_hub.constants as hf_constants

    # huggingface_hub reads its environment at import time: point its constants at the test's
    monkeypatch.setattr(hf_constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(
        hf_constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        fake.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    yield fake
    fake.stop()


def test_pull_end_to_end_then_offline_from_the_cache(tmp_path: Path, hub: FakeHub) -> None:
    store = tmp_path / "store"
    argv = ["pull", "care_s0", "--model-store", str(store), "--input-size", "64"]
    assert main(argv) == 0
    assert any(r.startswith("GET ") for r in hub.requests)
    assert list((tmp_path / "hf" / "hub").rglob("CARETrans_S0.pth.tar"))  # HF cache in HF_HOME
    package = ModelRepository(store).package("care-s0")
    manifest = package.manifest
    card = manifest.model_card
    assert (manifest.format, manifest.architecture, manifest.num_classes) == (
        "onnx", "care_s0", 1000
    )  # fmt: skip
    assert card.source_sha256 == sha256_file(FIXTURE)
    assert card.metrics == {"imagenet_top1_paper": 78.4, "gmacs_paper": 0.7}
    assert "2411.16170" in card.notes["paper"]
    assert card.hub == HubSource(
        repo=HUB_REPO, filename="CARETrans_S0.pth.tar", revision=COMMIT, requested="main"
    )
    assert set(manifest.files or {}) == {"model.onnx", "labels.txt"}
    assert card.source.startswith(hub.url) and card.source.endswith("CARETrans_S0.pth.tar")
    assert read_labels(package.path, manifest) == imagenet_labels()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert load_backend(package.path, manifest, threads=1).run(x)["logits"].shape == (1, 1000)

    hub.stop()  # offline: only the cache, the hub is gone
    seen = len(hub.requests)
    offline = ["pull", "care_s0", "--model-store", str(store), "--offline"]
    assert main([*offline, "--version", "2", "--format", "pytorch"]) == 0
    assert len(hub.requests) == seen
    again = ModelRepository(store).package("care-s0", 2).manifest
    assert again.model_card.source_sha256 == card.source_sha256
    assert again.model_card.hub == card.hub  # the commit the cache resolved main to


def test_a_dropped_download_resumes_with_a_range_request(tmp_path: Path, hub: FakeHub) -> None:
    """The hub drops the connection near the end: huggingface_hub asks for the rest only.

    (It resumes from the last whole chunk it read, ``DOWNLOAD_CHUNK_SIZE`` = 10 MB, so the cut
    comes after the first chunk of the 15 MB fixture.)
    """
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

    data = FIXTURE.read_bytes()
    cut = len(data) - 1_000_000
    assert cut > DOWNLOAD_CHUNK_SIZE
    hub.cut_after = cut
    argv = ["pull", "care_s0", "--model-store", str(tmp_path / "s"), "--format", "pytorch"]
    assert main(argv) == 0
    gets = [r.split("/resolve/", 1)[1] for r in hub.requests if r.startswith("GET ")]
    assert len(gets) == 2 and "Range" not in gets[0], gets
    start = int(gets[1].split("Range: bytes=")[1].rstrip("-"))
    assert 0 < start <= cut
    package = ModelRepository(tmp_path / "s").package("care-s0")
    assert package.manifest.model_card.source_sha256 == hashlib.sha256(data).hexdigest()


def test_offline_without_cache_is_a_clear_error(
    tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", "care_s0", "--model-store", str(tmp_path / "s"), "--offline"]) == 1
    assert "not in the Hugging Face cache" in capsys.readouterr().err
    assert hub.requests == []


def test_wrong_architecture_is_refused_and_writes_nothing(
    tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    assert main(["pull", "care_s1", "--model-store", str(store)]) == 1
    err = capsys.readouterr().err
    assert "checkpoint does not fit the model (is it the right variant?)" in err
    assert "missing keys:" in err or "shape mismatches:" in err
    assert not store.exists() or not any(store.iterdir())


def test_unknown_variant_and_hub_404_are_clear_errors(
    tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    assert main(["pull", "care_s9", "--model-store", store]) == 1
    assert "no official weights for 'care_s9'; pull knows care_s0, care_s1, care_s2" in (
        capsys.readouterr().err
    )
    assert hub.requests == []
    assert main(["pull", "care_s2", "--model-store", store]) == 1
    err = capsys.readouterr().err
    assert f"the hub has no {HUB_REPO}/CARETrans_S2.pth.tar at revision main (HTTP 404)" in err
    assert main(["pull", "care_s0", "--revision", "v9", "--model-store", store]) == 1
    assert "at revision v9 (HTTP 404)" in capsys.readouterr().err


def test_pull_pins_a_commit_and_checks_the_expected_sha256(
    tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    digest = sha256_file(FIXTURE)
    argv = ["pull", "care_s0", "--model-store", str(store), "--format", "pytorch"]
    assert main([*argv, "--revision", COMMIT, "--sha256", digest.upper()]) == 0
    assert f"sha256 {digest} as expected" in capsys.readouterr().out
    card = ModelRepository(store).package("care-s0").manifest.model_card
    assert card.hub is not None and (card.hub.revision, card.hub.requested) == (COMMIT, COMMIT)
    assert card.source_sha256 == digest


def test_pull_with_another_sha256_is_refused_and_writes_nothing(
    tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    wrong = "0" * 64
    argv = ["pull", "care_s0", "--model-store", str(store), "--sha256", wrong]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"has sha256 {sha256_file(FIXTURE)}, not the expected {wrong} (--sha256)" in err
    assert "nothing was imported" in err and COMMIT in err
    assert not store.exists() or not any(store.iterdir())
    with pytest.raises(SystemExit):  # not a digest: refused by the parser, before any download
        main(["pull", "care_s0", "--model-store", str(store), "--sha256", "abc"])
    assert "expected a sha256 (64 hex digits), got 'abc'" in capsys.readouterr().err


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_hub_fails_fast_with_one_line_naming_the_import_command(
    tmp_path: Path,
) -> None:
    """No retry storm: one line naming the file's URL and how to import a copy from elsewhere."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)
    argv = ["pull", "care_s1", "--model-store", str(tmp_path / "store")]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "care_serve", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert elapsed < 15, f"{elapsed:.1f} s: {proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("care-serve pull: error: cannot reach the Hugging Face Hub at ")
    assert endpoint in line
    url = f"{endpoint}/{HUB_REPO}/resolve/main/{OFFICIAL_WEIGHTS['care_s1'].filename}"
    assert url in line
    assert "care-serve import FILE --arch care_s1 --name care-s1 --model-store " in line
    assert not (tmp_path / "store").exists()


def test_an_unreachable_hub_falls_back_to_the_cached_file(tmp_path: Path, hub: FakeHub) -> None:
    """A file pulled before is imported from the cache when the hub is gone, without --offline."""
    argv = ["pull", "care_s0", "--format", "pytorch", "--input-size", "64"]
    assert main([*argv, "--model-store", str(tmp_path / "a")]) == 0
    hub.stop()
    seen = len(hub.requests)
    assert main([*argv, "--model-store", str(tmp_path / "b")]) == 0
    assert len(hub.requests) == seen
    card = ModelRepository(tmp_path / "b").package("care-s0").manifest.model_card
    assert card.hub is not None and card.hub.revision == COMMIT
