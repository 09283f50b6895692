"""The manifest, the package writer and the store reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from care_serve.errors import InvalidInput, ModelStoreError, NotFound
from care_serve.store import ModelRepository, StoreConfig, read_labels, read_manifest, write_package
from tests.helpers.packages import LABELS, make_manifest


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "../evil"},
        {"name": "a/b"},
        {"name": ".hidden"},
        {"version": 0},
        {"version": "1a"},
        {"weights": "../model.onnx"},
        {"task": "captioning"},
        {"labels": ["only-one"]},
        {"input": {"height": 100, "width": 64}},
        {"batching": {"max_batch_size": 4, "preferred_batch_sizes": [8]}},
        {"preprocessing": {"resize_short_side": 32}},
    ],
)
def test_manifest_rejects(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make_manifest(**overrides)


def test_write_and_read_package(tmp_path: Path) -> None:
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"not really onnx")
    manifest = make_manifest(postprocessing={"score_threshold": 0.3})
    dest = write_package(tmp_path / "store", manifest, weights, LABELS)
    assert dest == tmp_path / "store" / "tiny" / "1"
    back = read_manifest(dest)
    assert back.labels_file == "labels.txt" and back.postprocessing == {"score_threshold": 0.3}
    assert read_labels(dest, back) == LABELS
    assert (dest / "model.onnx").read_bytes() == b"not really onnx"
    with pytest.raises(ModelStoreError, match="already exists"):
        write_package(tmp_path / "store", manifest, weights)
    # the package directory itself is accepted as dest_dir too
    assert write_package(dest, manifest, weights, overwrite=True) == dest


def test_repository_lookup_and_traversal(tmp_path: Path) -> None:
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"x")
    root = tmp_path / "store"
    for version in (1, 2, 10):
        write_package(root, make_manifest(version=version), weights)
    repo = ModelRepository(root)
    assert repo.versions("tiny") == [1, 2, 10]
    assert repo.package("tiny").manifest.version == 10
    assert repo.package("tiny", "2").manifest.version == 2
    with pytest.raises(NotFound, match="no version 3"):
        repo.package("tiny", 3)
    with pytest.raises(NotFound, match="not in the model store"):
        repo.package("other")
    for bad in ("../store", "..", "tiny/1", "/etc", "a\x00b"):
        with pytest.raises(InvalidInput):
            repo.package(bad)
    with pytest.raises(InvalidInput):
        repo.package("tiny", "../1")


def test_repository_rejects_mismatched_and_broken_packages(tmp_path: Path) -> None:
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"x")
    root = tmp_path / "store"
    dest = write_package(root, make_manifest(), weights)
    data = json.loads((dest / "manifest.json").read_text())
    data["version"] = 7
    (dest / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelStoreError, match="package directory is tiny/1"):
        ModelRepository(root).package("tiny")
    (dest / "manifest.json").write_text("{not json")
    with pytest.raises(ModelStoreError, match="not readable JSON"):
        ModelRepository(root).package("tiny")


def test_store_config_defaults_and_errors(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    assert repo.config() == StoreConfig()
    (tmp_path / "store.json").write_text('{"defaults": {"classification": "tiny"}}')
    assert repo.config().defaults == {"classification": "tiny"}
    for bad, says in [
        ('{"defaults": {"classification": "../x"}}', "defaults: .*invalid model name"),
        ('{"defaults": {"painting": "tiny"}}', "unknown tasks"),
        ('{"models": {"tiny": {"version_policy": {"latest": 0}}}}', "latest"),
        ('{"models": {"tiny": {"version_policy": {"latest": 1, "all": true}}}}', "exactly one"),
        ('{"models": {"tiny": {"version_policy": {"specific": []}}}}', "at least one"),
        ('{"models": {"tiny": {"colour": "red"}}}', "colour"),
        ("{not json", "not readable JSON"),
    ]:
        (tmp_path / "store.json").write_text(bad)
        with pytest.raises(ModelStoreError, match=says) as info:
            repo.config()
        assert str(tmp_path) not in info.value.message


def _package_with_labels(tmp_path: Path) -> tuple[Path, Path]:
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"x")
    root = tmp_path / "store"
    return root, write_package(root, make_manifest(), weights, LABELS)


@pytest.mark.parametrize("member", ["labels.txt", "manifest.json", "model.onnx"])
def test_package_files_symlinked_outside_the_store_are_refused(tmp_path: Path, member: str) -> None:
    root, dest = _package_with_labels(tmp_path)
    outside = tmp_path / f"outside-{member}"
    outside.write_bytes((dest / member).read_bytes())
    (dest / member).unlink()
    (dest / member).symlink_to(outside)
    with pytest.raises(ModelStoreError, match="outside the model store") as info:
        ModelRepository(root).package("tiny")
    assert info.value.status_code == 422
    assert str(tmp_path) not in info.value.message  # no filesystem path to show a client


def test_version_directory_symlinked_outside_the_store_is_refused(tmp_path: Path) -> None:
    root, dest = _package_with_labels(tmp_path)
    outside = tmp_path / "elsewhere"
    dest.rename(outside)
    dest.symlink_to(outside, target_is_directory=True)
    repo = ModelRepository(root)
    with pytest.raises(ModelStoreError, match="outside the model store"):
        repo.package("tiny")
    with pytest.raises(ModelStoreError, match="outside the model store"):
        repo.package("tiny", 1)


def test_symlinks_inside_the_store_are_fine(tmp_path: Path) -> None:
    root, dest = _package_with_labels(tmp_path)
    shared = root / "shared-labels.txt"
    (dest / "labels.txt").rename(shared)
    (dest / "labels.txt").symlink_to(shared)
    info = ModelRepository(root).package("tiny")
    assert read_labels(info.path, info.manifest) == LABELS


def test_a_model_name_resolving_outside_the_store_stays_a_client_error(tmp_path: Path) -> None:
    root, _ = _package_with_labels(tmp_path)
    outside = tmp_path / "other-model"
    outside.mkdir()
    (root / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInput) as info:
        ModelRepository(root).package("evil")
    assert not isinstance(info.value, ModelStoreError) and info.value.status_code == 400
