"""``care-serve import``: turn an official CARE checkpoint into a model-store package.

ONNX (default): the checkpoint is loaded with strict checking, fused and
exported with ``care_serve.offline.export.export_onnx`` (parity against the torch
model measured on random inputs), and written with a manifest whose model card
records the source file, its sha256 and the parity error. PyTorch: the
checkpoint itself is copied into the package after it loaded cleanly.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from care_serve.commands.sizes import add_input_size_option

LABEL_SETS = ("imagenet",)


def register(subparsers: Any) -> None:
    """Add the ``import`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "import",
        help="package an official checkpoint (fused ONNX or PyTorch) into the model store",
        description="Load CKPT (an official-format CARE checkpoint) with strict checking and "
        "write STORE/NAME/VERSION/ with the weights (fused ONNX, or the checkpoint for "
        "--format pytorch), manifest.json and labels.txt.",
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint file (.pth/.pth.tar)")
    parser.add_argument("--arch", required=True, help="variant, e.g. care_s0, care_s1, care_s2")
    parser.add_argument("--name", required=True, help="model name in the store")
    parser.add_argument("--version", type=int, default=1, help="package version (default 1)")
    parser.add_argument(
        "--labels",
        default=None,
        help="class names: 'imagenet' (the 1000 ImageNet classes shipped with care-serve) or "
        "a text file with one name a line (default: imagenet for 1000 classes)",
    )
    parser.add_argument("--store", default="model_store", help="model store (default model_store)")
    parser.add_argument("--format", choices=("onnx", "pytorch"), default="onnx")
    add_input_size_option(parser, "224", "network input of the package")
    parser.add_argument("--description", default="", help="model card description")
    parser.add_argument("--license", default="", help="license of the weights")
    parser.add_argument("--no-ema", action="store_true", help="prefer non-EMA weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package")
    parser.set_defaults(handler=run)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (shipped as package data)."""
    from importlib.resources import files

    text = files("care_serve.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) != 1000:
        raise ValueError(f"imagenet_classes.txt has {len(labels)} names, expected 1000")
    return labels


def resolve_labels(spec: str | None, num_classes: int) -> list[str] | None:
    if spec is None:
        return imagenet_labels() if num_classes == 1000 else None
    labels = imagenet_labels() if spec == "imagenet" else _read_label_file(Path(spec))
    if len(labels) != num_classes:
        raise ValueError(f"--labels gives {len(labels)} names but the model has {num_classes}")
    return labels


def _read_label_file(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path} (or use --labels imagenet)")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def export_to_onnx(
    model: Any,
    path: Path,
    input_size: tuple[int, int],
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fused ONNX export with parity check; returns what the model card records.

    Uses ``care_serve.offline.export.export_onnx`` when present; otherwise a plain
    ``torch.onnx.export`` (dynamic batch axis, opset 17) checked against
    onnxruntime on random inputs.
    """
    try:
        from care_serve.offline.export import export_onnx
    except ImportError:
        return _export_fallback(model, path, input_size)
    report = export_onnx(
        model, path, input_size=input_size, output_names=["logits"], progress=progress
    )
    errors = {k: float(v) for k, v in getattr(report, "rel_errors", {}).items()}
    return {
        "exporter": "care_serve.offline.export.export_onnx",
        "fused": bool(getattr(report, "fused", True)),
        "opset": getattr(report, "opset", None),
        "onnx_nodes": getattr(report, "num_nodes", None),
        "parity_rel_errors": errors,
        "rel_error": max(errors.values()) if errors else None,
    }


def _export_fallback(model: Any, path: Path, input_size: tuple[int, int]) -> dict[str, Any]:
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch

    h, w = input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, h, w),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    x = np.random.default_rng(0).standard_normal((2, 3, h, w)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(["logits"], {"input": x})[0]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    if not rel < 1e-4:
        raise ValueError(f"ONNX export does not match the torch model (relative error {rel:.2e})")
    return {"exporter": "torch.onnx.export (plain, unfused)", "rel_error": rel, "opset": 17}


def run(args: argparse.Namespace) -> int:
    """Build the package and print where it went."""
    return import_checkpoint(args)


def import_checkpoint(
    args: argparse.Namespace,
    *,
    source: str | None = None,
    metrics: dict[str, float] | None = None,
    card_notes: dict[str, Any] | None = None,
) -> int:
    """``import`` proper; ``pull`` passes the hub URL, the paper's figures and notes."""
    import tempfile

    from care_serve.models import create_model, read_state_dict
    from care_serve.store import InputSpec, Manifest, ModelCard, Preprocessing, write_package

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    start = time.perf_counter()

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    step(f"loading {ckpt.name} ({args.arch}, strict)")
    height, width = args.input_size
    state = read_state_dict(ckpt, use_ema=not args.no_ema)
    head = state.get("head.fc.weight")
    num_classes = int(head.shape[0]) if head is not None else 1000
    distillation = "dist_head.fc.weight" in state
    model = create_model(
        args.arch,
        ckpt,
        use_ema=not args.no_ema,
        num_classes=num_classes,
        distillation=distillation,
    )
    labels = resolve_labels(args.labels, num_classes)
    digest = sha256_file(ckpt)
    cfg = model.pretrained_cfg
    with tempfile.TemporaryDirectory() as tmp:
        notes: dict[str, Any] = {"checkpoint_file": ckpt.name, **(card_notes or {})}
        if args.format == "onnx":
            weights = Path(tmp) / "model.onnx"
            step(f"exporting fused ONNX at {height}x{width}, then the parity check vs torch")
            notes.update(export_to_onnx(model, weights, (height, width), progress=step))
            if notes.get("rel_error") is not None:
                step(f"parity check: relative error {notes['rel_error']:.2e}")
        else:
            weights = Path(tmp) / "model.pth.tar"
            weights.write_bytes(ckpt.read_bytes())
        manifest = Manifest(
            name=args.name,
            version=args.version,
            task="classification",
            architecture=args.arch,
            format=args.format,
            weights=weights.name,
            num_classes=num_classes,
            model_kwargs={"distillation": distillation},
            input=InputSpec(height=height, width=width),
            preprocessing=Preprocessing(
                mode="center_crop",
                crop_pct=cfg.get("crop_pct", 0.875),
                interpolation=cfg.get("interpolation", "bicubic"),
                mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            ),
            model_card=ModelCard(
                description=args.description
                or f"{args.arch} image classifier ({num_classes} classes) imported from "
                f"{ckpt.name}",
                source=source or str(ckpt.resolve()),
                source_sha256=digest,
                metrics=dict(metrics or {}),
                license=args.license,
                notes=notes,
            ),
        )
        step(f"writing the package {args.name}/{args.version} into {args.store}")
        dest = write_package(args.store, manifest, weights, labels, overwrite=args.overwrite)
    print(f"wrote {dest} ({args.format}, {num_classes} classes, input {height}x{width})")
    if notes.get("rel_error") is not None:
        print(f"export parity: relative error {notes['rel_error']:.2e}")
    return 0
