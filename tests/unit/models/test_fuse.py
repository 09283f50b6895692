"""Exact inference fusion: same outputs as the research model, every variant, any module tree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from care_serve.models import CARE, create_model
from care_serve.models.care import CAREBlock, ClassifierHead
from care_serve.models.fuse import FusedCAREBlock, FusedHead, fuse_model
from tests.helpers.numerics import rel_error
from tests.helpers.paths import FIXTURES

TOL = 1e-5
SHAPES = [(1, 64, 64), (3, 64, 96), (1, 96, 32)]  # (batch, height, width)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    """One intra-op thread: on a shared 2-core box OpenMP spinning makes 2 threads 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0, zero_gamma: bool = False) -> nn.Module:
    """Random BN statistics and affines, LayerNorm affines and signed layer scales.

    Default BN statistics (mean 0, var 1) and gammas of 1 would hide folding bugs.
    """
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.5, generator=g)
            module.running_var.uniform_(0.3, 3.0, generator=g)
            module.weight.normal_(1.0, 0.3, generator=g)
            module.bias.normal_(0.0, 0.3, generator=g)
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            module.weight.normal_(1.0, 0.3, generator=g)
            module.bias.normal_(0.0, 0.3, generator=g)
        elif isinstance(module, CAREBlock) and module.gamma is not None:
            sign = torch.where(torch.rand(module.dim, generator=g) < 0.3, -1.0, 1.0)
            module.gamma.copy_(sign * torch.empty(module.dim).uniform_(0.05, 1.5, generator=g))
            if zero_gamma:
                module.gamma[::5] = 0.0
    return model.eval()


def random_model(name: str, seed: int = 0, **overrides: object) -> CARE:
    torch.manual_seed(seed)
    return randomize(create_model(name, **overrides), seed)  # type: ignore[return-value]


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(x)
    return out


@pytest.mark.parametrize("name", ["care_tiny", "care_s0", "care_s1", "care_s2"])
def test_fused_matches_unfused(name: str) -> None:
    model = random_model(name, seed=len(name))
    fused = fuse_model(model)
    for batch, height, width in SHAPES:
        x = torch.randn(batch, 3, height, width)
        assert rel_error(run(fused, x), run(model, x)) <= TOL, (batch, height, width)
    with torch.no_grad():
        for a, b in zip(
            fused.forward_intermediates(x), model.forward_intermediates(x), strict=True
        ):
            assert rel_error(a, b) <= TOL


def test_fusion_replaces_every_norm_block_and_head() -> None:
    model = random_model("care_tiny")
    fused = fuse_model(model)
    kinds = {type(m) for m in fused.modules()}
    assert nn.BatchNorm2d not in kinds and CAREBlock not in kinds
    assert nn.LayerNorm in kinds  # the affine-free head norm
    assert isinstance(fused.head, FusedHead) and fused.dist_head is None
    assert sum(isinstance(m, FusedCAREBlock) for m in fused.modules()) == 5
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())


def test_original_model_is_untouched() -> None:
    model = random_model("care_tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    ref = run(model, x)
    fuse_model(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.head, ClassifierHead) and model.dist_head is not None
    assert torch.equal(run(model, x), ref)


def test_zero_or_tiny_gamma_falls_back_to_an_explicit_scale() -> None:
    torch.manual_seed(1)
    model = randomize(create_model("care_tiny"), seed=1, zero_gamma=True)
    fused = fuse_model(model)
    blocks = [m for m in fused.modules() if isinstance(m, FusedCAREBlock) and not m.last]
    assert blocks and all(b.gamma is not None and b.mem_scale is None for b in blocks)
    x = torch.randn(2, 3, 64, 96)
    assert rel_error(run(fused, x), run(model, x)) <= TOL


def test_pre_logits_still_use_the_head_norm_affine() -> None:
    model = random_model("care_tiny")
    fused = fuse_model(model)
    feats = torch.randn(2, model.num_features, 2, 2)
    with torch.no_grad():
        ref = model.forward_head(feats, pre_logits=True)
        out = fused.forward_head(feats, pre_logits=True)
    assert rel_error(out, ref) <= TOL


@pytest.mark.parametrize(
    "overrides", [{"num_classes": 0}, {"distillation": False}, {"num_classes": 7}]
)
def test_models_without_or_with_other_heads_fuse(overrides: dict[str, object]) -> None:
    model = random_model("care_tiny", **overrides)
    fused = fuse_model(model)
    x = torch.randn(2, 3, 64, 64)
    assert rel_error(run(fused, x), run(model, x)) <= TOL


class _Detector(nn.Module):
    """Any module tree with a CARE backbone: a conv/BN neck on the stride-8..32 maps."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = create_model("care_tiny", num_classes=0)
        chs = [info["num_chs"] for info in self.backbone.feature_info[1:]]
        self.neck = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            for c in chs
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone.forward_intermediates(x)[1:]
        return tuple(neck(f) for neck, f in zip(self.neck, feats, strict=True))


def test_walker_fuses_a_backbone_inside_another_model() -> None:
    torch.manual_seed(0)
    model = randomize(_Detector())
    fused = fuse_model(model)
    assert not any(isinstance(m, (nn.BatchNorm2d, CAREBlock)) for m in fused.modules())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(fused(x), model(x), strict=True):
            assert rel_error(a, b) <= TOL


def test_fusing_twice_is_harmless() -> None:
    model = random_model("care_tiny")
    twice = fuse_model(fuse_model(model))
    x = torch.randn(1, 3, 64, 64)
    assert rel_error(run(twice, x), run(model, x)) <= TOL


def test_fused_golden_parity(official_s0_path: object, golden_input: np.ndarray) -> None:
    fused = fuse_model(create_model("care_s0", checkpoint=official_s0_path))
    x = torch.from_numpy(golden_input)
    assert rel_error(run(fused, x), np.load(FIXTURES / "care_s0_official_logits.npy")) <= TOL
    with torch.no_grad():
        stages = fused.forward_intermediates(x)
    for i, stage in enumerate(stages, start=1):
        ref = np.load(FIXTURES / f"care_s0_official_stage{i}.npy")
        assert rel_error(stage, ref) <= TOL
