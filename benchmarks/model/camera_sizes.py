"""Camera-size JPEGs through every task, fast vs exact preprocessing.

    .venv/bin/python -m benchmarks.model.camera_sizes [--store model_store] [--rounds 8]
        [--scenes 24] [--threads N]

For each model of the store (by default the bundled classifier, detector and
segmenter) and each camera size (1920x1080 and 4032x3024, photo-like JPEGs of
quality 90), the server's own steps are timed in interleaved rounds, once per
path: ``exact`` (``reduced_decode`` off: full-resolution decode, the offline
preprocessing bit for bit) and ``fast`` (the default: reduced-scale decode and
whole-factor shrinking). ``decode`` is ``probe_image`` + ``task.decode``,
``preprocess`` is ``task.preprocess``, ``compute`` the backend at batch 1 with
the threads the server gives each model of the store. ``ratio`` is
(decode + preprocess) / compute, each path against its own compute.

Then the fast path's relative error against the exact one, ``||fast - exact|| /
||exact||``, of the network input and of each network output, on the same
JPEGs; and each model's metric on held-out scenes drawn at camera-like sizes
(the wide distribution, long side 1920-4032, seed 2026 by default: neither the
training nor the validation seed), JPEG-encoded at quality 90, answered both ways:
top-1 accuracy, mAP@0.5 or mIoU, with the share of equal answers and the
median and largest input and output errors over the scenes.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["register", "run"]

PATHS = ("exact", "fast")
SIZES = ((1920, 1080), (4032, 3024))
MODELS = ("shapes-classifier", "shapes-detector", "shapes-segmenter")
HELD_OUT_SEED = 2026
MAX_BYTES = 256 * 1024 * 1024
MAX_PIXELS = 200_000_000
QUALITY = 90


@dataclass
class _Model:
    """One package: its backend and its task once per path."""

    name: str
    kind: str
    labels: list[str]
    backend: Any
    tasks: dict[str, Any]


@dataclass
class _Timing:
    """Milliseconds of each step, per round."""

    decode: list[float] = field(default_factory=list)
    preprocess: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)

    def medians(self) -> tuple[float, float, float]:
        return (
            statistics.median(self.decode),
            statistics.median(self.preprocess),
            statistics.median(self.compute),
        )


def rel_error(value: np.ndarray, reference: np.ndarray) -> float:
    """``||value - reference|| / ||reference||`` in float64."""
    ref = np.asarray(reference, np.float64)
    diff = np.asarray(value, np.float64) - ref
    return float(np.linalg.norm(diff) / max(float(np.linalg.norm(ref)), 1e-30))


def _load(store: Path, names: Sequence[str], threads: int, max_output_pixels: int) -> list[_Model]:
    from care_serve.backends import load_backend
    from care_serve.settings import Settings
    from care_serve.store.package import read_labels, read_manifest
    from care_serve.tasks import get_task_class

    models = []
    for name in names:
        package = store / name / "1"
        manifest = read_manifest(package)
        labels = read_labels(package, manifest)
        backend = load_backend(package, manifest, threads, "auto")
        tasks = {}
        for path in PATHS:
            settings = Settings(
                model_store=store,
                models=[],
                reduced_decode=path == "fast",
                max_output_pixels=max_output_pixels,
            )
            tasks[path] = get_task_class(manifest.task)(manifest, labels, settings)
        models.append(_Model(name, manifest.task, labels, backend, tasks))
    return models


def _prepare(task: Any, data: bytes) -> tuple[np.ndarray, Any, float, float]:
    from care_serve.imaging.decode import probe_image

    t0 = time.perf_counter()
    image = task.decode(probe_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS))
    t1 = time.perf_counter()
    array, meta = task.preprocess(image)
    t2 = time.perf_counter()
    return array, meta, (t1 - t0) * 1e3, (t2 - t1) * 1e3


def _outputs(model: _Model, array: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in model.backend.run(array[None]).items()}


def time_paths(
    models: Sequence[_Model], jpegs: dict[tuple[int, int], bytes], rounds: int
) -> dict[tuple[str, tuple[int, int], str], _Timing]:
    """Interleaved rounds (the order of the paths alternates) after one warm-up round."""
    timings: dict[tuple[str, tuple[int, int], str], _Timing] = {}
    for r in range(rounds + 1):
        for model in models:
            for size, data in jpegs.items():
                for path in PATHS if r % 2 else PATHS[::-1]:
                    array, _, decode_ms, pre_ms = _prepare(model.tasks[path], data)
                    t0 = time.perf_counter()
                    model.backend.run(array[None])
                    compute_ms = (time.perf_counter() - t0) * 1e3
                    if r == 0:
                        continue
                    timing = timings.setdefault((model.name, size, path), _Timing())
                    timing.decode.append(decode_ms)
                    timing.preprocess.append(pre_ms)
                    timing.compute.append(compute_ms)
    return timings


def decode_floor(data: bytes, rounds: int) -> tuple[float, float]:
    """Median ms of a full and of a 1/8-scale decode: no JPEG decode is cheaper than the latter
    (it still reads every coefficient of the file)."""
    from PIL import Image

    times: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(rounds):
        for scale, samples in times.items():
            t0 = time.perf_counter()
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (image.width // scale, image.height // scale))
                image.load()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[1]), statistics.median(times[8])


def path_errors(model: _Model, data: bytes) -> tuple[float, dict[str, float]]:
    """The fast path's relative error on the network input and on each output."""
    exact, _, _, _ = _prepare(model.tasks["exact"], data)
    fast, _, _, _ = _prepare(model.tasks["fast"], data)
    out_exact, out_fast = _outputs(model, exact), _outputs(model, fast)
    return rel_error(fast, exact), {k: rel_error(out_fast[k], v) for k, v in out_exact.items()}


# -- held-out scenes -----------------------------------------------------------------------------
def held_out_scenes(kind: str, count: int, seed: int) -> list[tuple[bytes, Any]]:
    """``count`` wide scenes at camera-like sizes, each as a quality-90 JPEG."""
    from PIL import Image

    from care_serve.offline.data.synthetic import CLASS_NAMES, scene_rng
    from care_serve.offline.data.wide import WideSpec, make_wide_scene

    spec = WideSpec(min_side=1080, min_long=1920, max_side=4032, max_aspect=16 / 9)
    scenes = []
    for i in range(count):
        rng = scene_rng(seed, kind, i)
        kinds = [CLASS_NAMES[i % len(CLASS_NAMES)]] if kind == "classification" else None
        scene = make_wide_scene(rng, kinds, spec)
        buf = io.BytesIO()
        Image.fromarray(scene.image).save(buf, "JPEG", quality=QUALITY)
        scenes.append((buf.getvalue(), scene))
    return scenes


@dataclass
class HeldOut:
    """One model's held-out metric both ways, their agreement and the fast path's errors."""

    model: str
    metric: str
    values: dict[str, float]
    agreement: float
    input_errors: list[float]
    output_errors: list[float]


def _params(kind: str) -> dict[str, Any]:
    if kind == "classification":
        return {"top_k": 1}
    if kind == "detection":
        return {"score_threshold": 0.001, "max_detections": 100}
    return {}


def evaluate_held_out(model: _Model, scenes: Sequence[tuple[bytes, Any]]) -> HeldOut:
    """Answer every scene both ways and score the answers."""
    from care_serve.offline.evaluation.metrics import (
        ConfusionMatrix,
        ImageDetections,
        accuracy,
        mean_average_precision,
    )

    answers: dict[str, list[Any]] = {p: [] for p in PATHS}
    input_errors, output_errors = [], []
    for data, _ in scenes:
        arrays, outputs = {}, {}
        for path in PATHS:
            task = model.tasks[path]
            arrays[path], meta, _, _ = _prepare(task, data)
            outputs[path] = _outputs(model, arrays[path])
            params = task.parse_params(_params(model.kind))
            answers[path].append(task.postprocess(outputs[path], meta, params))
        input_errors.append(rel_error(arrays["fast"], arrays["exact"]))
        output_errors.append(
            max(rel_error(outputs["fast"][k], v) for k, v in outputs["exact"].items())
        )
    index = {name: i for i, name in enumerate(model.labels)}
    values: dict[str, float] = {}
    if model.kind == "classification":
        target = [index[scene.shapes[0].kind] for _, scene in scenes]
        top1 = {p: [a.predictions[0].class_id for a in answers[p]] for p in PATHS}
        values = {p: accuracy(top1[p], target) for p in PATHS}
        agreement = float(np.mean(np.equal(top1["fast"], top1["exact"])))
        return HeldOut(model.name, "accuracy", values, agreement, input_errors, output_errors)
    if model.kind == "detection":
        kept = {}
        for p in PATHS:
            images = []
            for (_, scene), answer in zip(scenes, answers[p], strict=True):
                dets = answer.detections
                images.append(
                    ImageDetections(
                        gt_boxes=np.asarray([s.box for s in scene.shapes], np.float64),
                        gt_labels=np.asarray([index[s.kind] for s in scene.shapes], np.int64),
                        boxes=np.asarray([d.box for d in dets], np.float64).reshape(-1, 4),
                        scores=np.asarray([d.score for d in dets], np.float64),
                        labels=np.asarray([d.class_id for d in dets], np.int64),
                    )
                )
            values[p] = mean_average_precision(images, len(model.labels), 0.5)[0]
            threshold = model.tasks[p].config.score_threshold
            kept[p] = [
                sorted(d.class_id for d in a.detections if d.score >= threshold) for a in answers[p]
            ]
        agreement = float(
            np.mean([a == b for a, b in zip(kept["fast"], kept["exact"], strict=True)])
        )
        return HeldOut(model.name, "mAP@0.5", values, agreement, input_errors, output_errors)
    lut = np.asarray([index[n] for n in ("background", "circle", "square", "triangle")])
    same = []
    for p in PATHS:
        confusion = ConfusionMatrix(len(model.labels))
        for (_, scene), answer in zip(scenes, answers[p], strict=True):
            confusion.update(np.asarray(answer.mask), lut[scene.mask])
        values[p] = confusion.mean_iou(include_background=True)
    for a, b in zip(answers["fast"], answers["exact"], strict=True):
        same.append(float(np.mean(np.asarray(a.mask) == np.asarray(b.mask))))
    return HeldOut(model.name, "mIoU", values, float(np.mean(same)), input_errors, output_errors)


# -- report ----------------------------------------------------------------------------------------
def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return lines


def format_report(
    timings: dict[tuple[str, tuple[int, int], str], _Timing],
    errors: dict[tuple[str, tuple[int, int]], tuple[float, dict[str, float]]],
    held_out: Sequence[HeldOut],
    threads: int,
    rounds: int,
    floors: dict[tuple[int, int], tuple[int, float, float]] | None = None,
) -> str:
    """Three markdown tables: timings, errors on the camera JPEGs, held-out metrics."""
    rows = []
    for (name, size, path), timing in timings.items():
        decode, pre, compute = timing.medians()
        rows.append(
            [
                name,
                f"{size[0]}x{size[1]}",
                path,
                f"{decode:.1f}",
                f"{pre:.1f}",
                f"{compute:.1f}",
                f"{(decode + pre) / compute:.2f}x",
            ]
        )
    lines = [
        f"Median ms of {rounds} interleaved rounds, batch 1, {threads} intra-op thread(s); "
        "ratio = (decode + preprocess) / compute.",
        "",
        *_table(["model", "JPEG", "path", "decode", "preprocess", "compute", "ratio"], rows),
        "",
        "Fast path against exact on the same JPEGs, ||fast - exact|| / ||exact||:",
        "",
    ]
    rows = [
        [
            name,
            f"{size[0]}x{size[1]}",
            f"{inp:.2%}",
            ", ".join(f"{k} {v:.2%}" for k, v in outs.items()),
        ]
        for (name, size), (inp, outs) in errors.items()
    ]
    lines += _table(["model", "JPEG", "input", "outputs"], rows)
    if floors:
        lines += [
            "",
            "The JPEGs themselves: full decode and 1/8-scale decode (the codec's floor):",
            "",
        ]
        rows = [
            [f"{size[0]}x{size[1]}", f"{nbytes / 1e6:.2f} MB", f"{full:.1f}", f"{eighth:.1f}"]
            for size, (nbytes, full, eighth) in floors.items()
        ]
        lines += _table(["JPEG", "file", "full decode ms", "1/8 decode ms"], rows)
    if not held_out:
        return "\n".join(lines)
    lines += ["", "Held-out camera-size scenes (JPEG quality 90), both ways:", ""]
    rows = [
        [
            h.model,
            str(len(h.input_errors)),
            h.metric,
            f"{h.values['exact']:.4f}",
            f"{h.values['fast']:.4f}",
            f"{h.agreement:.4f}",
            f"{statistics.median(h.input_errors):.2%} / {max(h.input_errors):.2%}",
            f"{statistics.median(h.output_errors):.2%} / {max(h.output_errors):.2%}",
        ]
        for h in held_out
    ]
    lines += _table(
        [
            "model",
            "scenes",
            "metric",
            "exact",
            "fast",
            "same answers",
            "input err median / max",
            "output err median / max",
        ],
        rows,
    )
    lines += [
        "",
        "same answers: classes equal (classification), equal sorted classes of the boxes "
        "at the served threshold (detection), share of equal mask pixels (segmentation).",
    ]
    return "\n".join(lines)


# -- command ---------------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add the ``camera-sizes`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "camera-sizes",
        help="camera-size JPEGs: decode, preprocess and compute, fast vs exact",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--store", type=Path, default=None, help="model store (bundled)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="models of the store")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (default 8)")
    parser.add_argument(
        "--scenes", type=int, default=24, help="held-out scenes per model (0: skip; default 24)"
    )
    parser.add_argument(
        "--seed", type=int, default=HELD_OUT_SEED, help=f"scene seed (default {HELD_OUT_SEED})"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads (0: what the server gives each)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the report."""
    from benchmarks.load.client import make_jpeg
    from care_serve.settings import Settings, default_model_store

    store = args.store or default_model_store()
    threads = args.threads or Settings(models=[]).threads_per_model(len(args.models))
    start = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    say(f"loading {', '.join(args.models)} ({threads} thread(s) each)")
    models = _load(store, args.models, threads, Settings(models=[]).max_output_pixels)
    jpegs = {size: make_jpeg(*size) for size in SIZES}
    say(f"timing {args.rounds} rounds")
    timings = time_paths(models, jpegs, args.rounds)
    errors = {(m.name, size): path_errors(m, data) for m in models for size, data in jpegs.items()}
    floors = {size: (len(data), *decode_floor(data, args.rounds)) for size, data in jpegs.items()}
    held_out = []
    if args.scenes > 0:
        # Masks at the size sent, to compare with the scenes' own masks.
        scored = _load(store, args.models, threads, MAX_PIXELS)
        for model in scored:
            say(f"{model.name}: {args.scenes} held-out scenes")
            scenes = held_out_scenes(model.kind, args.scenes, args.seed)
            held_out.append(evaluate_held_out(model, scenes))
    print(format_report(timings, errors, held_out, threads, args.rounds, floors))
    say("done")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m benchmarks.model.camera_sizes`` with ``argv``."""
    from benchmarks.entry import run_command

    return run_command("camera-sizes", register, argv)


if __name__ == "__main__":
    raise SystemExit(main())
