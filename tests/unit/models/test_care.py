"""The CARE definition against the authors' golden fixtures and official state dicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from care_serve.models import CARE, create_model, get_config, list_models
from tests.helpers.numerics import rel_error
from tests.helpers.paths import FIXTURES

OFFICIAL_NAMES = {"care_s0": "CARETrans_S0", "care_s1": "CARETrans_S1", "care_s2": "CARETrans_S2"}


@pytest.fixture(scope="module")
def official() -> dict:
    with open(FIXTURES / "official_state_dicts.json") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def s0(official_s0_path) -> CARE:
    return create_model("care_s0", checkpoint=official_s0_path)


def test_registry_lists_every_variant() -> None:
    assert {"care_s0", "care_s1", "care_s2", "care_tiny"} <= set(list_models())
    with pytest.raises(ValueError, match="known variants"):
        create_model("care_s9")


@pytest.mark.parametrize("name", sorted(OFFICIAL_NAMES))
def test_parameter_names_shapes_and_counts_are_official(name: str, official: dict) -> None:
    ref = official[OFFICIAL_NAMES[name]]
    expected = {key: tuple(shape) for key, shape, _ in ref["state_dict"]}
    model = create_model(name)
    mine = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    assert mine == expected
    n_params = sum(p.numel() for p in model.parameters())
    n_dist = sum(p.numel() for p in model.dist_head.parameters())
    assert n_params == ref["params"]
    assert n_params - n_dist == ref["params_without_dist_head"]


def test_create_model_returns_eval_mode(s0: CARE) -> None:
    assert not s0.training
    assert all(not m.training for m in s0.modules())


@torch.no_grad()
def test_golden_logits_heads_and_stages(s0: CARE, golden_input: np.ndarray) -> None:
    x = torch.from_numpy(golden_input)
    stages = s0.forward_intermediates(x)
    for i, out in enumerate(stages, start=1):
        ref = np.load(FIXTURES / f"care_s0_official_stage{i}.npy")
        assert rel_error(out, ref) <= 1e-5, f"stage {i}"
    assert (
        rel_error(s0.head(stages[-1]), np.load(FIXTURES / "care_s0_official_head_logits.npy"))
        <= 1e-5
    )
    assert (
        rel_error(
            s0.dist_head(stages[-1]), np.load(FIXTURES / "care_s0_official_dist_head_logits.npy")
        )
        <= 1e-5
    )
    logits = s0(x)
    assert rel_error(logits, np.load(FIXTURES / "care_s0_official_logits.npy")) <= 1e-5
    meta = json.loads((FIXTURES / "care_s0_official_meta.json").read_text())
    assert logits.topk(5).indices.tolist() == meta["top5"]


@torch.no_grad()
def test_batch_items_are_independent(s0: CARE, golden_input: np.ndarray) -> None:
    x = torch.from_numpy(golden_input)
    together = s0(x)
    alone = torch.cat([s0(x[i : i + 1]) for i in range(len(x))])
    assert rel_error(alone, together) <= 1e-5


@pytest.mark.parametrize("name", ["care_tiny", "care_s0", "care_s1", "care_s2"])
@pytest.mark.parametrize(("batch", "height", "width"), [(1, 64, 64), (3, 96, 160)])
@torch.no_grad()
def test_any_multiple_of_32_and_any_batch(name: str, batch: int, height: int, width: int) -> None:
    model = create_model(name)
    logits = model(torch.randn(batch, 3, height, width))
    assert logits.shape == (batch, 1000)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("height", "width"), [(224, 225), (100, 224), (0, 32), (16, 16)])
def test_invalid_sizes_are_rejected_clearly(height: int, width: int) -> None:
    model = create_model("care_tiny")
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, height, width))


def test_feature_info_describes_the_stage_outputs() -> None:
    for name in ("care_s0", "care_s2", "care_tiny"):
        model = create_model(name, num_classes=0)
        cfg = get_config(name)
        info = model.feature_info
        assert [f["reduction"] for f in info] == [4, 8, 16, 32]
        # the classification network's last block widens stride 32 to the head width
        assert [f["num_chs"] for f in info] == [*cfg.widths[:3], cfg.head_width]
        with torch.no_grad():
            feats = model.forward_intermediates(torch.randn(2, 3, 128, 96))
        for f, meta in zip(feats, info, strict=True):
            assert f.shape == (
                2,
                meta["num_chs"],
                128 // meta["reduction"],
                96 // meta["reduction"],
            )


def test_imagenet_checkpoint_loads_into_a_backbone(official_s0_path, s0: CARE) -> None:
    from care_serve.models import load_checkpoint

    backbone = create_model("care_s0", num_classes=0, distillation=False)
    load_checkpoint(backbone, official_s0_path, ignore=("head.", "dist_head."))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, ref in zip(
            backbone.forward_intermediates(x), s0.forward_intermediates(x), strict=True
        ):
            assert rel_error(ours, ref) == 0.0
        assert backbone(x).shape == (1, get_config("care_s0").head_width)
