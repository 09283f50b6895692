"""Training a few steps on tiny generated data: loss falls, packages serve, resume is exact."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from care_serve.cli import main
from care_serve.errors import CheckpointError, ModelStoreError
from care_serve.models import read_state_dict
from care_serve.offline.data.generate import generate_dataset
from care_serve.offline.evaluation.runner import PackageRunner
from care_serve.offline.training.classification import ClassificationTraining
from care_serve.offline.training.loop import TrainConfig, load_network_weights, train_loop
from care_serve.offline.training.pipeline import TrainOptions, get_train_task, run_training
from care_serve.store.package import read_manifest
from tests.helpers.paths import OFFICIAL_S0_CHECKPOINT

FIXTURE = OFFICIAL_S0_CHECKPOINT
SIZE = (64, 64)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    """Training tests use one torch thread (the machine is shared; results do not depend on it)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    for task in ("classification", "detection", "segmentation"):  # the easy scenes: a few steps
        n = 24 if task == "classification" else 8
        generate_dataset(task, root / task, n, seed=0, distribution="classic")
        n = 6 if task == "classification" else 3
        generate_dataset(task, root / task, n, 1, "val", distribution="classic")
    return root


def _options(data: Path, tmp_path: Path, task: str, **kw: object) -> TrainOptions:
    base = TrainOptions(
        task=task,
        data=data / task,
        output=tmp_path / "store",
        name=f"tiny-{task}",
        input_size=SIZE,
        steps=4,
        batch_size=4,
        work_dir=tmp_path / f"work-{task}",
        progress=False,
        command=f"python -m care_serve train {task} ...",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_loss_decreases(data: Path, tmp_path: Path, task: str) -> None:
    train_task = get_train_task(task)
    cached = train_task.load(data / task, "train", SIZE, False)
    torch.manual_seed(0)
    model = train_task.build_model("care_tiny", train_task.num_classes(cached), None)
    cfg = TrainConfig(
        task=task,
        arch="care_tiny",
        input_size=SIZE,
        steps=30,
        num_classes=train_task.num_classes(cached),
        batch_size=8,
        lr=3e-3,
        warmup_steps=3,
        augment=False,
    )
    result = train_loop(model, train_task, cached, cfg, tmp_path / "state.pt", progress=False)
    assert len(result.losses) == 30 and all(np.isfinite(result.losses))
    assert np.mean(result.losses[-5:]) < 0.8 * np.mean(result.losses[:5])


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_package_writes_loads_and_runs(data: Path, tmp_path: Path, task: str) -> None:
    crop = None if task == "classification" else 32
    outcome = run_training(_options(data, tmp_path, task, train_crop=crop))
    assert outcome.package == tmp_path / "store" / f"tiny-{task}" / "1"
    manifest = read_manifest(outcome.package)
    assert manifest.task == task and manifest.format == "onnx"
    assert (manifest.input.height, manifest.input.width) == SIZE
    card = manifest.model_card
    assert card.training_command and card.notes["steps"] == 4
    words = {"classification": "one of 3 classes: circle, square, triangle",
             "detection": "circle / square / triangle",
             "segmentation": "one of 4 classes: background, circle, square, triangle"}  # fmt: skip
    assert words[task] in card.description  # written from the data's class names
    assert card.notes["generator"]["seed"] == 0  # where the data came from
    assert card.notes["export_parity_rel_error"] < 1e-4
    expected = {"classification": "accuracy", "detection": "map50", "segmentation": "miou"}[task]
    assert 0.0 <= card.metrics[expected] <= 1.0  # evaluated on the val split
    if task == "detection":  # and at the served default threshold, which goes to the notes
        assert {"precision", "recall", "f1", "duplicate_rate"} <= set(card.metrics)
        assert "score_threshold" not in card.metrics
        assert card.notes["evaluated_on"]["postprocessing"] == {
            "score_threshold": 0.4,
            "class_agnostic_nms": True,
        }
        assert manifest.postprocessing == {
            "score_threshold": 0.4,
            "nms_iou": 0.4,
            "class_agnostic_nms": True,
        }
    runner = PackageRunner(outcome.package)
    images = sorted((data / task).rglob("*.png"))[:2]
    if task == "segmentation":
        images = sorted((data / task / "images" / "val").glob("*.png"))[:2]
    results = list(runner.predict_files(images))
    assert len(results) == 2
    runner.close()
    if task != "classification":
        assert (tmp_path / f"work-{task}" / "backbone.pth.tar").is_file()


def _loop_setup(data: Path, steps: int) -> tuple:
    task = get_train_task("classification")
    cached = task.load(data / "classification", "train", SIZE, False)
    cfg = TrainConfig(
        task="classification",
        arch="care_tiny",
        input_size=SIZE,
        steps=steps,
        num_classes=3,
        batch_size=4,
        checkpoint_every=2,
    )
    torch.manual_seed(0)
    return task, cached, cfg, task.build_model("care_tiny", 3, None)


def test_resume_continues_exactly(data: Path, tmp_path: Path) -> None:
    opts = _options(data, tmp_path, "classification", steps=6, checkpoint_every=2, val_split=None)
    first = run_training(dataclasses.replace(opts, stop_after=3))
    assert first.package is None and len(first.result.losses) == 3
    state_path = tmp_path / "work-classification" / "train_state.pt"
    assert torch.load(state_path, weights_only=True)["step"] == 3
    resumed = run_training(dataclasses.replace(opts, resume=True))
    assert resumed.result.resumed_from == 3 and resumed.package is not None
    # The same run without interruption gives the same losses and weights.
    task, cached, cfg, model = _loop_setup(data, 6)
    straight = train_loop(model, task, cached, cfg, tmp_path / "straight.pt", progress=False)
    np.testing.assert_allclose(resumed.result.losses, straight.losses, rtol=1e-5)
    saved = torch.load(state_path, weights_only=True)["model"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(saved[key], value, rtol=1e-5, atol=1e-6)


def test_resume_errors(data: Path, tmp_path: Path) -> None:
    task, cached, cfg, model = _loop_setup(data, 2)
    state = tmp_path / "state.pt"
    with pytest.raises(CheckpointError, match=r"no training state"):
        train_loop(model, task, cached, cfg, state, resume=True, progress=False)
    train_loop(model, task, cached, cfg, state, progress=False)
    other = dataclasses.replace(cfg, steps=3)
    with pytest.raises(CheckpointError, match=r"other settings.*steps: saved 2, now 3"):
        train_loop(model, task, cached, other, state, resume=True, progress=False)
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read training state"):
        train_loop(model, task, cached, cfg, state, resume=True, progress=False)


def test_init_checkpoint_loads_all_but_the_heads() -> None:
    state = read_state_dict(FIXTURE)
    model = ClassificationTraining().build_model("care_s0", 3, FIXTURE)
    torch.testing.assert_close(model.stem[0].weight, state["stem.0.weight"].float())
    assert model.head.fc.out_features == 3 and model.dist_head is None
    detector = get_train_task("detection").build_model("care_s0", 3, FIXTURE)
    torch.testing.assert_close(
        detector.backbone.stages[3].blocks[0].gamma, state["stages.3.blocks.0.gamma"].float()
    )
    with pytest.raises(CheckpointError, match=r"does not fit"):
        ClassificationTraining().build_model("care_tiny", 3, FIXTURE)


def test_init_weights_takes_the_whole_network_of_a_run(data: Path, tmp_path: Path) -> None:
    opts = _options(data, tmp_path, "detection", steps=2, val_split=None)
    first = run_training(opts)
    assert first.state_path is not None
    trained = torch.load(first.state_path, weights_only=True)["model"]
    task = get_train_task("detection")
    fresh = task.build_model("care_tiny", 3, None)
    load_network_weights(fresh, first.state_path)
    for key, value in fresh.state_dict().items():  # heads included, unlike --init-checkpoint
        assert torch.equal(value, trained[key]), key
    # a fine-tuning run at another input size starts from it and records where it started
    tuned = run_training(
        dataclasses.replace(
            opts,
            input_size=(96, 96),
            init_weights=first.state_path,
            work_dir=tmp_path / "work-tuned",
            name="tuned",
        )
    )
    assert tuned.package is not None
    notes = read_manifest(tuned.package).model_card.notes
    assert notes["init_weights"] == str(first.state_path)
    with pytest.raises(CheckpointError, match=r"do not fit this network.*shape mismatch"):
        load_network_weights(task.build_model("care_tiny", 5, None), first.state_path)
    with pytest.raises(CheckpointError, match=r"do not fit this network.*missing"):
        load_network_weights(get_train_task("segmentation").build_model("care_tiny", 4, None),
                             first.state_path)  # fmt: skip
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torch")
    with pytest.raises(CheckpointError, match="cannot read network weights"):
        load_network_weights(fresh, junk)
    with pytest.raises(ValueError, match="not both"):
        run_training(dataclasses.replace(opts, init_weights=junk, init_checkpoint=FIXTURE))


def test_hard_pixels_is_a_recorded_segmentation_option(data: Path, tmp_path: Path) -> None:
    outcome = run_training(
        _options(data, tmp_path, "segmentation", steps=2, val_split=None, hard_pixels=0.25)
    )
    assert outcome.package is not None and outcome.state_path is not None
    assert read_manifest(outcome.package).model_card.notes["hard_pixels"] == 0.25
    saved = torch.load(outcome.state_path, weights_only=True)["config"]
    assert saved["hard_pixels"] == 0.25  # part of what --resume checks
    with pytest.raises(ValueError, match="for segmentation only"):
        run_training(_options(data, tmp_path, "detection", hard_pixels=0.25))
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        run_training(_options(data, tmp_path, "segmentation", hard_pixels=2.0))


def test_cli_train_and_evaluate(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "store" / "cli-cls" / "1"
    code = main(
        [
            "train",
            "classification",
            "--data",
            str(data / "classification"),
            "--model-store",
            str(package),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--input-size",
            "64",
            "--quiet",
            "--work-dir",
            str(tmp_path / "work"),
            "--description",
            "Tells circles, squares and triangles apart.",
        ]
    )
    assert code == 0 and f"package: {package}" in capsys.readouterr().out
    card = read_manifest(package).model_card
    assert "--steps 2" in (card.training_command or "")
    assert card.description == "Tells circles, squares and triangles apart."
    assert "care-serve generate --distribution classic" in card.notes["training_domain"]
    buckets = card.notes["buckets"]  # measured per bucket on val: each image in one background
    assert sum(r["count"] for b, r in buckets.items() if b.startswith("background=")) == 6
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in buckets.values())
    assert isinstance(card.notes["failure_modes"], list)
    code = main(
        [
            "evaluate",
            "classification",
            "--package",
            str(package),
            "--data",
            str(data / "classification"),
            "--json",
            "--quiet",
        ]
    )
    metrics = json.loads(capsys.readouterr().out)
    assert code == 0 and metrics["accuracy"] == card.metrics["accuracy"]
    assert metrics["buckets"] == {
        name: {k: pytest.approx(v, abs=1e-4) for k, v in row.items()}
        for name, row in card.notes["buckets"].items()
    }


def test_evaluate_write_card_records_the_served_defaults(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = run_training(_options(data, tmp_path, "detection", steps=2))
    assert outcome.package is not None
    path = outcome.package / "manifest.json"
    document = json.loads(path.read_text())
    document["postprocessing"]["score_threshold"] = 0.05  # a served default changed by hand
    path.write_text(json.dumps(document))
    (outcome.package / "manifest.sig").write_text("a signature of the manifest before\n")
    argv = ["evaluate", "detection", "--package", str(outcome.package), "--data",
            str(data / "detection"), "--quiet", "--json"]  # fmt: skip
    assert main([*argv, "--write-card"]) == 0
    captured = capsys.readouterr()
    measured = json.loads(captured.out)
    assert not (outcome.package / "manifest.sig").exists()  # it signed the old manifest
    assert "removed manifest.sig, which signed the old manifest" in captured.err
    manifest = read_manifest(outcome.package)
    card = manifest.model_card
    assert manifest.postprocessing["score_threshold"] == 0.05  # the rest of the manifest kept
    assert card.notes["evaluated_on"]["postprocessing"]["score_threshold"] == 0.05
    assert card.metrics["precision"] == pytest.approx(measured["precision"])
    assert card.metrics["recall"] == pytest.approx(measured["recall"])
    assert "score_threshold" not in card.metrics and card.notes["steps"] == 2
    assert card.notes["buckets"].keys() == measured["buckets"].keys()
    assert main([*argv, "--write-card", "--no-class-agnostic-nms"]) == 1
    assert "change postprocessing.class_agnostic_nms in its manifest" in capsys.readouterr().err


def test_cli_rejects_bad_arguments(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(
            ["train", "classification", "--data", "x", "--model-store", "y", "--input-size", "100"]
        )
    assert "multiples of 32" in capsys.readouterr().err
    code = main(
        [
            "train",
            "classification",
            "--data",
            str(tmp_path / "none"),
            "--model-store",
            str(tmp_path / "s" / "m" / "1"),
            "--quiet",
        ]
    )
    assert code == 1 and "dataset directory not found" in capsys.readouterr().err
    code = main(
        [
            "train",
            "classification",
            "--data",
            str(data / "classification"),
            "--model-store",
            str(tmp_path / "store"),
            "--quiet",
        ]
    )
    assert code == 1 and "give --name" in capsys.readouterr().err
    code = main(
        [
            "evaluate",
            "detection",
            "--package",
            str(tmp_path / "nope"),
            "--data",
            str(data / "detection"),
            "--quiet",
        ]
    )
    assert code == 1 and "manifest" in capsys.readouterr().err


def test_an_existing_package_is_replaced_only_with_overwrite(data: Path, tmp_path: Path) -> None:
    opts = _options(data, tmp_path, "classification", steps=2, val_split=None)
    first = run_training(opts)
    assert first.package is not None
    written = (first.package / "manifest.json").read_bytes()
    # refused before any work: a missing dataset would fail later, the package first
    missing_data = dataclasses.replace(opts, data=tmp_path / "no-such-data")
    with pytest.raises(ModelStoreError, match="already exists; pass --overwrite"):
        run_training(missing_data)
    assert (first.package / "manifest.json").read_bytes() == written
    again = run_training(dataclasses.replace(opts, overwrite=True, seed=1))
    assert again.package == first.package
    assert (first.package / "manifest.json").read_bytes() != written
