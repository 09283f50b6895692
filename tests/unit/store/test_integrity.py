"""The sha256 of package files: recorded by write_package, checked before a version loads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from care_serve.errors import ModelStoreError
from care_serve.store import ModelRepository, add_digests, read_manifest, write_package
from care_serve.store.integrity import (
    CHUNK_BYTES,
    package_files,
    sha256_file,
    verify_files,
)
from tests.helpers.packages import LABELS, make_manifest
from tests.helpers.paths import BUNDLED_STORE

WEIGHTS = b"not really onnx, but bytes to hash"


def _package(tmp_path: Path) -> Path:
    weights = tmp_path / "w.onnx"
    weights.write_bytes(WEIGHTS)
    return write_package(tmp_path / "store", make_manifest(), weights, LABELS)


def test_write_package_records_the_sha256_of_every_file(tmp_path: Path) -> None:
    dest = _package(tmp_path)
    manifest = read_manifest(dest)
    assert manifest.files == {
        "labels.txt": hashlib.sha256(("\n".join(LABELS) + "\n").encode()).hexdigest(),
        "model.onnx": hashlib.sha256(WEIGHTS).hexdigest(),
    }
    verify_files(dest, manifest, "tiny/1")  # good: no error


def test_sha256_file_reads_in_chunks(tmp_path: Path) -> None:
    big = tmp_path / "big"
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)  # two chunks and a bit
    big.write_bytes(data)
    assert sha256_file(big) == hashlib.sha256(data).hexdigest()


def test_a_tampered_file_is_refused_naming_it(tmp_path: Path) -> None:
    dest = _package(tmp_path)
    manifest = read_manifest(dest)
    (dest / "model.onnx").write_bytes(WEIGHTS + b"!")
    with pytest.raises(ModelStoreError) as info:
        verify_files(dest, manifest, "tiny/1")
    message = info.value.message
    assert info.value.status_code == 422
    assert message.startswith("tiny/1/model.onnx: sha256 ")
    assert hashlib.sha256(WEIGHTS + b"!").hexdigest() in message
    assert f"does not match {manifest.files['model.onnx']}" in message  # type: ignore[index]
    assert "write the package again (care-serve import" in message
    (dest / "model.onnx").write_bytes(WEIGHTS)
    (dest / "labels.txt").write_text("cat\n" * 5)
    with pytest.raises(ModelStoreError, match=r"^tiny/1/labels\.txt: sha256"):
        verify_files(dest, manifest, "tiny/1")


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    dest = _package(tmp_path)
    manifest = read_manifest(dest)
    (dest / "labels.txt").unlink()
    with pytest.raises(ModelStoreError, match=r"^tiny/1/labels\.txt: listed in manifest.json "):
        verify_files(dest, manifest, "tiny/1")


def test_an_extra_unlisted_file_is_fine(tmp_path: Path) -> None:
    dest = _package(tmp_path)
    (dest / "README.md").write_text("notes beside the package")
    verify_files(dest, read_manifest(dest), "tiny/1")


def test_the_weights_and_labels_must_be_listed(tmp_path: Path) -> None:
    dest = _package(tmp_path)
    manifest = read_manifest(dest)
    files = dict(manifest.files or {})
    for name in ("model.onnx", "labels.txt"):
        others = {k: v for k, v in files.items() if k != name}
        partial = manifest.model_copy(update={"files": others})
        says = rf"^tiny/1/{name}: manifest.json lists no sha256"
        with pytest.raises(ModelStoreError, match=says):
            verify_files(dest, partial, "tiny/1")


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"model.onnx": "abc"}, "64 hex digits"),
        ({"model.onnx": "g" * 64}, "64 hex digits"),
        ({"../model.onnx": "a" * 64}, "plain file name"),
        ({"sub/model.onnx": "a" * 64}, "plain file name"),
        ({"manifest.json": "a" * 64}, "must not list manifest.json"),
        ({"manifest.sig": "a" * 64}, "must not list manifest.sig"),
    ],
)
def test_the_manifest_refuses_bad_names_and_digests(files: dict[str, str], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        make_manifest(files=files)


def test_digests_are_read_in_any_case_and_kept_lowercase() -> None:
    assert make_manifest(files={"model.onnx": "AB" * 32}).files == {"model.onnx": "ab" * 32}


def test_package_files_skip_the_manifest_signature_hidden_files_and_directories(
    tmp_path: Path,
) -> None:
    for name in ("manifest.json", "manifest.sig", ".DS_Store", "model.onnx", "labels.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    assert package_files(tmp_path) == ["labels.txt", "model.onnx"]
    (tmp_path / "bad name.txt").write_text("x")
    with pytest.raises(ModelStoreError, match="plain file name"):
        package_files(tmp_path)


def test_add_digests_upgrades_an_old_package_keeping_everything_else(tmp_path: Path) -> None:
    dest = _package(tmp_path)
    document = json.loads((dest / "manifest.json").read_text())
    recorded = document.pop("files")
    (dest / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")
    (dest / "manifest.sig").write_text("signed the old manifest\n")
    assert read_manifest(dest).files is None
    assert add_digests(dest) == recorded
    assert json.loads((dest / "manifest.json").read_text()) == {**document, "files": recorded}
    assert not (dest / "manifest.sig").exists()  # it signed a manifest that is gone
    assert add_digests(dest) is None  # already there, and the files match
    (dest / "model.onnx").write_bytes(b"changed")
    before = (dest / "manifest.json").read_bytes()
    with pytest.raises(ModelStoreError, match=r"tiny/1/model\.onnx: sha256"):
        add_digests(dest)  # never blesses a changed file
    assert (dest / "manifest.json").read_bytes() == before


def test_a_listed_file_symlinked_outside_the_store_is_refused(tmp_path: Path) -> None:
    dest = _package(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    (dest / "notes.txt").symlink_to(outside)
    path = dest / "manifest.json"
    document = json.loads(path.read_text())
    document["files"]["notes.txt"] = sha256_file(outside)
    path.write_text(json.dumps(document))
    with pytest.raises(ModelStoreError, match="outside the model store"):
        ModelRepository(tmp_path / "store").package("tiny")


def test_the_bundled_packages_carry_digests_that_match() -> None:
    repository = ModelRepository(BUNDLED_STORE)
    for name in repository.model_names():
        for version in repository.versions(name):
            package = repository.package(name, version)
            assert package.manifest.files, f"{name}/{version} lists no digests"
            verify_files(package.path, package.manifest, f"{name}/{version}")
