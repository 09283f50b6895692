"""``care-serve import`` of the official-format S0 checkpoint, and the PyTorch backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from care_serve.backends import load_backend
from care_serve.cli import main
from care_serve.offline.importer import imagenet_labels, sha256_file
from care_serve.store import ModelRepository, read_labels, write_package
from tests.helpers.numerics import rel_error
from tests.helpers.packages import LABELS, make_manifest


def test_imagenet_labels_ship_with_the_package() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) >= 998  # two 'crane', two 'maillot'
    assert (labels[0], labels[207], labels[281], labels[999]) == (
        "tench", "golden retriever", "tabby", "toilet tissue"
    )  # fmt: skip


def test_import_checkpoint_to_onnx(
    tmp_path: Path, tiny_models: dict[int, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """care_tiny stands in for S0 (same official checkpoint format, much faster to export)."""
    model, _, ckpt = tiny_models[1]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    store = tmp_path / "store"
    argv = ["import", str(ckpt), "--arch", "care_tiny", "--name", "tiny", "--version", "3"]
    assert (
        main([*argv, "--model-store", str(store), "--input-size", "64", "--labels", str(labels)])
        == 0
    )
    package = ModelRepository(store).package("tiny")
    manifest = package.manifest
    assert (manifest.format, manifest.num_classes, manifest.version) == ("onnx", 5, 3)
    assert manifest.model_card.source_sha256 == sha256_file(ckpt)
    assert read_labels(package.path, manifest) == LABELS
    assert manifest.preprocessing.interpolation == "bicubic"
    assert manifest.resize_short_side == 73  # int(64 / 0.875), as timm computes it
    notes = json.loads((package.path / "manifest.json").read_text())["model_card"]["notes"]
    assert notes["checkpoint_file"] == ckpt.name and notes["rel_error"] < 1e-4

    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    backend = load_backend(package.path, manifest, threads=1)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert rel_error(backend.run(x)["logits"], ref) < 1e-5
    # a 5-class model cannot take the 1000 ImageNet names
    assert main([*argv, "--model-store", str(store), "--labels", "imagenet", "--overwrite"]) == 1
    assert "gives 1000 names but the model has 5" in capsys.readouterr().err
    # an existing package is refused before any work, naming the flag that replaces it
    assert main([*argv, "--model-store", str(store)]) == 1
    assert "tiny/3 already exists; pass --overwrite" in capsys.readouterr().err


def test_pytorch_backend_matches_onnx(tmp_path: Path, tiny_models: dict[int, Any]) -> None:
    model, onnx_path, ckpt = tiny_models[1]
    onnx_pkg = write_package(tmp_path, make_manifest(), onnx_path, LABELS)
    torch_manifest = make_manifest(name="tiny-pt", format="pytorch", weights="model.pth")
    torch_pkg = write_package(tmp_path, torch_manifest, ckpt, LABELS)
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    onnx_out = load_backend(onnx_pkg, make_manifest(), 1).run(x)["logits"]
    torch_out = load_backend(torch_pkg, torch_manifest, 1).run(x)["logits"]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert rel_error(torch_out, ref) < 1e-6
    assert rel_error(onnx_out, ref) < 1e-5
