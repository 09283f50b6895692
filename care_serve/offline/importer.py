"""Import a CARE checkpoint into the model store as a classification or embedding package.

ONNX (default): the checkpoint is loaded with strict checking, fused and exported
with ``care_serve.offline.export.export_onnx`` (parity against the torch model on
random inputs), and written with a manifest whose model card records the source
file, its sha256 and the parity error. PyTorch: the checkpoint itself is copied
into the package after it loaded cleanly. An embedding package serves the
network's pre-logit features (``care_serve.models.embedding.CAREEmbedder``)
instead of its logits. ``care-serve import`` and
``care-serve pull`` are thin commands over ``import_checkpoint``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from care_serve.errors import ModelStoreError
from care_serve.store import HubSource, InputSpec, Manifest, ModelCard, Preprocessing, write_package
from care_serve.store.integrity import sha256_file
from care_serve.store.package import package_path

__all__ = [
    "IMPORT_TASKS",
    "ImportOptions",
    "ImportResult",
    "export_to_onnx",
    "imagenet_labels",
    "import_checkpoint",
    "resolve_labels",
    "sha256_file",
]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImportOptions:
    """What to import and where: one checkpoint becomes ``model_store/name/version``."""

    checkpoint: Path
    arch: str
    name: str
    task: Literal["classification", "embedding"] = "classification"
    version: int = 1
    model_store: Path = Path("model_store")
    labels: str | None = None  # "imagenet", a file of names, or None (ImageNet for 1000)
    format: Literal["onnx", "pytorch"] = "onnx"
    input_size: tuple[int, int] = (224, 224)  # height, width
    description: str = ""
    license: str = ""
    use_ema: bool = True
    overwrite: bool = False
    source: str | None = None  # where the checkpoint came from (default: its path)
    hub: HubSource | None = None  # care-serve pull: the hub repo, file and commit
    metrics: dict[str, float] = field(default_factory=dict)  # published figures
    card_notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportResult:
    """The written package and what the import measured."""

    path: Path
    num_classes: int
    rel_error: float | None


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (shipped as package data)."""
    text = files("care_serve.models").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) != 1000:
        raise ValueError(f"imagenet_classes.txt has {len(labels)} names, expected 1000")
    return labels


def resolve_labels(spec: str | None, num_classes: int) -> list[str] | None:
    """Class names from ``spec`` ("imagenet" or a file), checked against the class count."""
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


IMPORT_TASKS = ("classification", "embedding")
OUTPUT_NAMES = {"classification": "logits", "embedding": "embedding"}


def export_to_onnx(
    model: Any,
    path: Path,
    input_size: tuple[int, int],
    progress: Progress | None = None,
    output_name: str = "logits",
) -> dict[str, Any]:
    """Fused ONNX export with its parity check; what the model card records."""
    from care_serve.offline.export import export_onnx

    report = export_onnx(
        model, path, input_size=input_size, output_names=[output_name], progress=progress
    )
    errors = {k: float(v) for k, v in report.rel_errors.items()}
    return {
        "exporter": "care_serve.offline.export.export_onnx",
        "fused": report.fused,
        "opset": report.opset,
        "onnx_nodes": report.num_nodes,
        "parity_rel_errors": errors,
        "rel_error": max(errors.values()) if errors else None,
    }


def import_checkpoint(options: ImportOptions, progress: Progress | None = None) -> ImportResult:
    """Load, export and write the package described by ``options``.

    An existing package is refused before any work unless ``overwrite`` is set.
    """
    from care_serve.models import create_model, read_state_dict
    from care_serve.models.embedding import CAREEmbedder

    step = progress or (lambda _message: None)
    ckpt = options.checkpoint
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    dest = package_path(options.model_store, options.name, options.version)
    if dest.exists() and not options.overwrite:
        raise ModelStoreError(f"{dest} already exists; pass --overwrite to replace it")
    step(f"loading {ckpt.name} ({options.arch}, strict)")
    height, width = options.input_size
    state = read_state_dict(ckpt, use_ema=options.use_ema)
    head = state.get("head.fc.weight")
    num_classes = int(head.shape[0]) if head is not None else 1000
    distillation = "dist_head.fc.weight" in state
    model = create_model(
        options.arch,
        ckpt,
        use_ema=options.use_ema,
        num_classes=num_classes,
        distillation=distillation,
    )
    cfg = model.pretrained_cfg
    model_kwargs: dict[str, Any] = {"distillation": distillation}
    network: Any = model
    out_width = num_classes  # the manifest's num_classes: classes, or the embedding's length
    if options.task == "embedding":
        network = CAREEmbedder(model).eval()
        out_width = network.dim
        model_kwargs["num_classes"] = num_classes  # to rebuild the checkpoint's network
        if options.labels is not None:
            raise ValueError("an embedding model has no classes: drop --labels")
        labels = None
    else:
        labels = resolve_labels(options.labels, num_classes)
    digest = sha256_file(ckpt)
    output = OUTPUT_NAMES[options.task]
    with tempfile.TemporaryDirectory() as tmp:
        notes: dict[str, Any] = {"checkpoint_file": ckpt.name, **options.card_notes}
        if options.format == "onnx":
            weights = Path(tmp) / "model.onnx"
            step(f"exporting fused ONNX at {height}x{width}, then the parity check vs torch")
            notes.update(export_to_onnx(network, weights, (height, width), step, output))
            if notes.get("rel_error") is not None:
                step(f"parity check: relative error {notes['rel_error']:.2e}")
        else:
            weights = Path(tmp) / "model.pth.tar"
            weights.write_bytes(ckpt.read_bytes())
        manifest = Manifest(
            name=options.name,
            version=options.version,
            task=options.task,
            architecture=options.arch,
            format=options.format,
            weights=weights.name,
            num_classes=out_width,
            model_kwargs=model_kwargs,
            outputs=[output],
            input=InputSpec(height=height, width=width),
            preprocessing=Preprocessing(
                mode="center_crop",
                crop_pct=cfg.get("crop_pct", 0.875),
                interpolation=cfg.get("interpolation", "bicubic"),
                mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            ),
            model_card=ModelCard(
                description=options.description or _description(options, out_width, ckpt.name),
                source=options.source or str(ckpt.resolve()),
                domain=_domain(options, out_width),
                source_sha256=digest,
                hub=options.hub,
                metrics=dict(options.metrics),
                license=options.license,
                notes=notes,
            ),
        )
        step(f"writing the package {options.name}/{options.version} into {options.model_store}")
        path = write_package(
            options.model_store, manifest, weights, labels, overwrite=options.overwrite
        )
    return ImportResult(path=path, num_classes=out_width, rel_error=notes.get("rel_error"))


def _domain(options: ImportOptions, width: int) -> str:
    """What a checkpoint knows, when it can be told from its shape (ImageNet-1k heads)."""
    if options.task == "classification" and width == 1000 and options.labels in (None, "imagenet"):
        return "photos of everyday scenes and objects: the 1000 ImageNet-1k classes"
    if options.task == "embedding":
        return "photos: features learnt on ImageNet-1k"
    return ""


def _description(options: ImportOptions, width: int, source: str) -> str:
    if options.task == "embedding":
        return f"{options.arch} image embedding ({width} values) imported from {source}"
    return f"{options.arch} image classifier ({width} classes) imported from {source}"
