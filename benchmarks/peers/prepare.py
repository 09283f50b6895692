"""The peers' model files, all made from one checkpoint into a temporary directory.

- care-serve: ``care-serve import`` (fused ONNX, the product path) into a store;
- the minimal onnxruntime peer: a plain, unfused ``export_onnx(fuse=False)``;
- the torch peers: the checkpoint itself (eager model built by ``care_serve.models``);
- TorchServe: a model archive (``torch-model-archiver``) with the checkpoint, the
  handler and the package's manifest and labels.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Artefacts", "care_serve_store", "plain_onnx", "torchserve_archive"]

HANDLER = Path(__file__).with_name("torchserve_handler.py")
TORCHSERVE_MODEL = "care"


@dataclass(frozen=True)
class Artefacts:
    """Where the shared inputs are."""

    checkpoint: Path
    arch: str
    model_name: str
    store: Path

    @property
    def package_dir(self) -> Path:
        return self.store / self.model_name / "1"


def care_serve_store(checkpoint: Path, arch: str, model_name: str, root: Path) -> Artefacts:
    """``care-serve import`` the checkpoint into ``root/store`` (a subprocess, like a user)."""
    store = root / "store"
    cmd = [
        sys.executable, "-m", "care_serve", "import", str(checkpoint), "--arch", arch,
        "--name", model_name, "--model-store", str(store),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=900)
    return Artefacts(checkpoint, arch, model_name, store)


def plain_onnx(art: Artefacts, root: Path) -> Path:
    """A plain (unfused) ONNX export of the same model, verified against torch."""
    from care_serve.models import create_model
    from care_serve.offline.export import export_onnx

    path = root / "plain.onnx"
    if not path.is_file():
        manifest_size = _input_size(art)
        model = create_model(art.arch, art.checkpoint)
        export_onnx(model, path, input_size=manifest_size, fuse=False, output_names=["logits"])
    return path


def _input_size(art: Artefacts) -> tuple[int, int]:
    from care_serve.store import read_manifest

    manifest = read_manifest(art.package_dir)
    return manifest.input.height, manifest.input.width


def torchserve_archive(art: Artefacts, root: Path) -> Path:
    """``torch-model-archiver`` -> ``root/ts_store/care.mar``; returns the store."""
    archiver = shutil.which("torch-model-archiver", path=str(Path(sys.executable).parent))
    if archiver is None:
        raise RuntimeError(
            "torch-model-archiver is not installed: pip install -e '.[peers]' (TorchServe peer)"
        )
    ts_store = root / "ts_store"
    ts_store.mkdir(exist_ok=True)
    extra = ",".join(str(art.package_dir / name) for name in ("manifest.json", "labels.txt"))
    cmd = [
        archiver, "--model-name", TORCHSERVE_MODEL, "--version", "1.0",
        "--serialized-file", str(art.checkpoint), "--handler", str(HANDLER),
        "--extra-files", extra, "--export-path", str(ts_store), "--force",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=300)
    return ts_store
