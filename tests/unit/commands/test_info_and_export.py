"""Parameter and GMAC counts against the official figures; the info and export commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from care_serve.cli import main
from care_serve.models import create_model
from care_serve.models.complexity import count_macs, count_params
from tests.helpers.paths import FIXTURES

OFFICIAL = {"care_s0": "CARETrans_S0", "care_s1": "CARETrans_S1", "care_s2": "CARETrans_S2"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def official() -> dict:
    with open(FIXTURES / "official_state_dicts.json") as fh:
        return json.load(fh)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_counts_match_the_official_figures(name: str, official: dict) -> None:
    ref = official[OFFICIAL[name]]
    model = create_model(name)
    assert count_params(model) == (ref["params"], ref["params_without_dist_head"])
    gmacs, by_module, by_op = count_macs(model, (224, 224))
    assert gmacs == pytest.approx(ref["flop_counter_gmacs_224"], abs=1e-9)
    assert sum(by_module[f"stages.{i}"] for i in range(4)) < gmacs
    assert set(by_op) == {"aten.convolution", "aten.bmm", "aten.addmm"}


def test_info_command_prints_the_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "care_s0"]) == 0
    out = capsys.readouterr().out
    assert "7,340,000" in out and "6,312,952" in out and "0.718" in out


def test_info_at_another_resolution_scales_the_macs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "care_tiny", "--input-size", "64x96"]) == 0
    assert "care_tiny at 64x96" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "care_s0", "--input-size", "100"], "multiples of 32"),
        (["info", "care_s0", "--input-size", "big"], "bad size"),
        (["info", "care_s9"], "known variants"),
    ],
)
def test_info_bad_input_exits_non_zero_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # a bad option value: argparse's usage error
        code = int(exc.code or 0)
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_export_command_writes_a_verified_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tiny.onnx"
    argv = ["export", "care_tiny", "--random-weights", "--output", str(out), "--input-size", "64"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert out.is_file() and "relative error onnxruntime vs torch" in captured.out
    assert "exporting to ONNX" in captured.err  # the step lines


def test_export_command_from_the_official_checkpoint(
    tmp_path: Path, official_s0_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s0.onnx"
    argv = ["export", "care_s0", "--checkpoint", str(official_s0_path), "--output", str(out)]
    assert main([*argv, "--input-size", "64x96"]) == 0
    assert out.is_file() and "fused" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--checkpoint", "/does/not/exist.pth"], "checkpoint file not found"),
        (["--checkpoint", "DAMAGED"], "cannot read checkpoint"),
        (["--checkpoint", "WRONG_VARIANT"], "does not fit the model"),
        (["--random-weights", "--input-size", "65"], "multiples of 32"),
    ],
)
def test_export_bad_input_exits_1_with_a_message(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"not a checkpoint at all")
    wrong = tmp_path / "wrong.pth"
    torch.save(create_model("care_tiny").state_dict(), wrong)
    extra = [{"DAMAGED": str(damaged), "WRONG_VARIANT": str(wrong)}.get(a, a) for a in extra]
    out = tmp_path / "x.onnx"
    try:
        code = main(["export", "care_s0", "--output", str(out), *extra])
    except SystemExit as exc:  # a bad option value: argparse's usage error
        code = int(exc.code or 0)
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
