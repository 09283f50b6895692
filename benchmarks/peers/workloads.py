"""What the servers are asked to do: an image size and a model of the temporary store.

- ``classify-640x480``: the default, a 640x480 JPEG to the classifier (CARE S0
  imported from the checkpoint: shorter side 256 bicubic, centre crop 224);
- ``detect-1920x1080``: a camera frame to the detector (the bundled
  ``model_store/shapes-detector``: 512x512 letterbox, NMS);
- ``classify-4032x3024``: a 12-megapixel phone photo to the classifier.

``camera`` stands for the last two. The framework peers serve the package's own
fused ``model.onnx`` with ``frameworks.pipeline``, configured from the package's
manifest by ``pipeline_config``; ``check_pipeline`` compares that preprocessing
with care-serve's before anything is measured.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.peers.prepare import Artefacts

__all__ = [
    "CAMERA",
    "WORKLOADS",
    "Workload",
    "check_pipeline",
    "expand_workloads",
    "pipeline_config",
    "workload_artefacts",
]

REPO = Path(__file__).resolve().parents[2]
DETECTOR = "shapes-detector"
CAMERA = ("detect-1920x1080", "classify-4032x3024")


@dataclass(frozen=True)
class Workload:
    """An image size and the task (and so the model) it is sent to."""

    key: str
    task: str
    width: int
    height: int

    @property
    def detection(self) -> bool:
        return self.task == "detection"


WORKLOADS = {
    w.key: w
    for w in (
        Workload("classify-640x480", "classification", 640, 480),
        Workload("detect-1920x1080", "detection", 1920, 1080),
        Workload("classify-4032x3024", "classification", 4032, 3024),
    )
}


def expand_workloads(names: list[str]) -> list[Workload]:
    """Workload keys (``camera`` = both camera-size ones) -> workloads, in order, once each."""
    keys: list[str] = []
    for name in names:
        for key in CAMERA if name == "camera" else (name,):
            if key not in WORKLOADS:
                raise ValueError(f"unknown workload {key!r}; choose from {', '.join(WORKLOADS)}")
            if key not in keys:
                keys.append(key)
    return [WORKLOADS[key] for key in keys]


def workload_artefacts(art: Artefacts, workload: Workload) -> Artefacts:
    """The artefacts with the workload's model: the classifier, or the bundled detector
    copied into the same temporary store."""
    if not workload.detection:
        return art
    target = art.store / DETECTOR
    if not target.is_dir():
        shutil.copytree(REPO / "model_store" / DETECTOR, target)
    return dataclasses.replace(art, model_name=DETECTOR)


def pipeline_config(art: Artefacts, onnx: Path, threads: int = 2) -> dict[str, Any]:
    """``frameworks.pipeline``'s settings from the package's manifest and labels."""
    from care_serve.store import read_labels, read_manifest

    manifest = read_manifest(art.package_dir)
    pre = manifest.preprocessing
    config: dict[str, Any] = {
        "onnx": str(onnx),
        "task": manifest.task,
        "input": [manifest.input.height, manifest.input.width],
        "mode": pre.mode,
        "interpolation": pre.interpolation,
        "mean": list(pre.mean),
        "std": list(pre.std),
        "labels": read_labels(art.package_dir, manifest),
        "threads": threads,
    }
    if manifest.task == "classification":
        if pre.mode != "center_crop":
            raise ValueError(f"the peers' pipeline does centre crops only, not {pre.mode!r}")
        config["resize_short_side"] = manifest.resize_short_side
    elif manifest.task == "detection":
        if pre.mode != "letterbox":
            raise ValueError(f"the peers' pipeline letterboxes detector inputs, not {pre.mode!r}")
        from care_serve.tasks.dense import parse_config
        from care_serve.tasks.detection import DetectionConfig

        det = parse_config(DetectionConfig, manifest)
        config["detection"] = {
            "score_threshold": det.score_threshold,
            "nms_iou": det.nms_iou,
            "max_detections": det.max_detections,
            "pre_nms_top_k": det.pre_nms_top_k,
            "strides": list(det.strides),
            "class_agnostic_nms": det.class_agnostic_nms,
        }
    else:
        raise ValueError(f"the peers serve classification and detection, not {manifest.task!r}")
    return config


def write_pipeline_config(art: Artefacts, onnx: Path, path: Path) -> Path:
    path.write_text(json.dumps(pipeline_config(art, onnx), indent=1) + "\n")
    return path


def check_pipeline(art: Artefacts, jpeg: bytes, tolerance: float = 1e-4) -> float:
    """The peers' network input against care-serve's for ``jpeg`` (full-resolution decode);
    the largest difference, or ``ValueError`` above ``tolerance``."""
    import numpy as np

    from benchmarks.peers.frameworks.pipeline import Pipeline
    from care_serve.imaging.preprocess import preprocess_image
    from care_serve.store import read_manifest
    from care_serve.tasks.dense import letterbox_preprocess

    manifest = read_manifest(art.package_dir)
    pipeline = Pipeline(pipeline_config(art, art.package_dir / manifest.weights, threads=1))
    image = pipeline.decode(jpeg)
    ours, _ = pipeline.preprocess(image)
    if manifest.task == "detection":
        theirs, _ = letterbox_preprocess(image, manifest)
    else:
        theirs, _ = preprocess_image(image, manifest)
    if ours.shape != theirs.shape:
        raise ValueError(f"peer input {ours.shape} != care-serve input {theirs.shape}")
    worst = float(np.max(np.abs(ours - theirs)))
    if worst > tolerance:
        raise ValueError(f"peer preprocessing differs from care-serve's by {worst:g}")
    return worst
