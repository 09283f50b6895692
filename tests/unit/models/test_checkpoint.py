"""Checkpoint containers, damaged files and the refusal to run code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from care_serve.errors import CheckpointError
from care_serve.models import create_model, read_state_dict
from tests.helpers.numerics import rel_error


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("care_tiny").state_dict()


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"state_dict_ema": sd, "state_dict": {k: v * 0 for k, v in sd.items()}},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["plain", "state_dict", "model", "ema-preferred", "model+module", "module"],
)
def test_containers_load_the_same_weights(wrap, tiny_state, tmp_path: Path) -> None:
    path = _save(wrap(tiny_state), tmp_path / "ckpt.pth")
    model = create_model("care_tiny", checkpoint=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, tiny_state[key]), key


def test_fp16_official_checkpoint_matches_fp32(official_s0_path: Path) -> None:
    sd = read_state_dict(official_s0_path)
    assert sd["stem.0.weight"].dtype == torch.float16
    model = create_model("care_s0", checkpoint=official_s0_path)
    assert next(model.parameters()).dtype == torch.float32
    assert rel_error(model.stem[0].weight, sd["stem.0.weight"].float()) == 0.0


def test_missing_unexpected_and_mismatched_keys_are_named(tiny_state, tmp_path: Path) -> None:
    broken = dict(tiny_state)
    del broken["stem.0.weight"]
    broken["stages.9.extra"] = torch.zeros(1)
    broken["head.fc.bias"] = torch.zeros(7)
    path = _save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as info:
        create_model("care_tiny", checkpoint=path)
    message = str(info.value)
    assert "missing keys: stem.0.weight" in message
    assert "unexpected keys: stages.9.extra" in message
    assert "head.fc.bias (checkpoint (7,), model (1000,))" in message


def test_wrong_variant_is_refused(official_s0_path: Path) -> None:
    with pytest.raises(CheckpointError, match="right variant"):
        create_model("care_s1", checkpoint=official_s0_path)


def test_truncated_file(official_s0_path: Path, tmp_path: Path) -> None:
    data = official_s0_path.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        create_model("care_s0", checkpoint=path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "image.jpg"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        create_model("care_tiny", checkpoint=path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        create_model("care_tiny", checkpoint=tmp_path / "nope.pth")


def test_no_tensors_inside(tmp_path: Path) -> None:
    path = _save({"epoch": 1, "args": {"lr": 0.1}}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no tensors"):
        create_model("care_tiny", checkpoint=path)


class _Exploit:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_never_executed(tiny_state, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = {"state_dict": tiny_state, "payload": _Exploit(marker)}
    path = _save(payload, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        create_model("care_tiny", checkpoint=path)
    assert not marker.exists()
