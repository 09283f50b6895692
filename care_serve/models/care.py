"""CARE: deCoupled duAl-interactive lineaR attEntion (CVPR 2025).

A faithful re-implementation of the authors' model definition: parameter names
and shapes match the released checkpoints exactly, so official files load with
strict checking. The file follows timm's order: small blocks, the block, the
stage, the network, the variant table; ``care_serve.models.create_model`` builds
a variant by name.

Layout of one block with ``C = 4g`` channels::

    m, a, c3, c7 = split(x, [g, g, g, g])
    f = cat(mix_a(a), dw3(c3), dw7(c7))        # token mixer
    f = f + fc2(dw3(gelu(fc1(bn(f)))))         # inter 1
    y = cat(m, f)
    y = y + fc2(dw3(gelu(fc1(bn(y)))))         # inter 2
    out = x + gamma * y

The last block of the network has no inter-2 ``fc2``, no residual and no
``gamma``: it widens stride 32 to the head width (``r2 * C``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CARE",
    "CARE_CONFIGS",
    "DEFAULT_PRETRAINED_CFG",
    "CAREConfig",
    "check_input_size",
]

# Preprocessing the official checkpoints expect (timm's ``pretrained_cfg``).
DEFAULT_PRETRAINED_CFG: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "crop_pct": 0.875,
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "num_classes": 1000,
}

INPUT_MULTIPLE = 32


def check_input_size(height: int, width: int) -> None:
    """Raise ``ValueError`` unless both sides are positive multiples of 32."""
    if height <= 0 or width <= 0 or height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
        raise ValueError(
            f"CARE needs an input height and width that are positive multiples of "
            f"{INPUT_MULTIPLE} (e.g. 224x224 or 256x320); got {height}x{width}"
        )


# ---------------------------------------------------------------------------
# Small blocks
# ---------------------------------------------------------------------------


def _dwconv(channels: int, kernel: tuple[int, int]) -> nn.Conv2d:
    """Depthwise convolution with bias and "same" padding."""
    return nn.Conv2d(
        channels,
        channels,
        kernel,
        padding=(kernel[0] // 2, kernel[1] // 2),
        groups=channels,
        bias=True,
    )


def linear_attention(
    v: torch.Tensor, qk: torch.Tensor, num_heads: int, eps: float = 1e-6
) -> torch.Tensor:
    """Multi-head linear attention with ``phi(t) = elu(t) + 1``; ``v`` is the input itself.

    ``qk`` holds ``q`` then ``k`` along channels (``2 * C``). Per head:
    ``phi(q) (phi(k)^T v / N) / (phi(q) . mean_N phi(k) + eps)``. Cost is linear in
    the number of tokens ``N = H * W``.
    """
    b, c, h, w = v.shape
    n = h * w
    d = c // num_heads
    q, k = qk.chunk(2, dim=1)
    q = (F.elu(q.reshape(b, num_heads, d, n)) + 1.0).transpose(-1, -2)  # (B, h, N, d)
    k = (F.elu(k.reshape(b, num_heads, d, n)) + 1.0).transpose(-1, -2)
    vt = v.reshape(b, num_heads, d, n).transpose(-1, -2)
    kv = (k.transpose(-1, -2) @ vt) / n  # (B, h, d, d)
    z = 1.0 / (q @ k.mean(dim=2, keepdim=True).transpose(-1, -2) + eps)  # (B, h, N, 1)
    return ((q @ kv) * z).transpose(-1, -2).reshape(b, c, h, w)


class TokenMixer(nn.Module):
    """Decoupled token mixer: a global branch on ``a``, depthwise 3x3 / 7x7 on ``c3`` / ``c7``.

    Takes the ``3g`` channels ``cat(a, c3, c7)`` and returns ``3g`` channels. The
    global branch is linear attention (``qk``) or, in the early stages, a pair of
    depthwise 11x1 / 1x11 strip convolutions.
    """

    def __init__(self, dim: int, use_attention: bool, head_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.use_attention = use_attention
        self.num_heads = 0
        if use_attention:
            if dim % head_dim:
                raise ValueError(f"attention width {dim} is not a multiple of head_dim {head_dim}")
            self.num_heads = dim // head_dim
            self.qk = nn.Conv2d(dim, 2 * dim, 1, bias=True)
        else:
            self.dwconvatt_1 = _dwconv(dim, (11, 1))
            self.dwconvatt_2 = _dwconv(dim, (1, 11))
        self.dwconv1 = _dwconv(dim, (3, 3))
        self.dwconv2 = _dwconv(dim, (7, 7))

    def global_branch(self, a: torch.Tensor) -> torch.Tensor:
        if self.use_attention:
            return linear_attention(a, self.qk(a), self.num_heads)
        return self.dwconvatt_1(a) + self.dwconvatt_2(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, c3, c7 = x.split(self.dim, dim=1)
        return torch.cat([self.global_branch(a), self.dwconv1(c3), self.dwconv2(c7)], dim=1)


class InterLayer(nn.Module):
    """Dual interaction: inter 1 on the mixed features, inter 2 on ``cat(memory, features)``.

    ``last=True`` drops inter 2's ``fc2`` and residual, so the output is the
    ``r2 * dim`` wide hidden features (the head input of the classification network).
    """

    def __init__(
        self,
        dim: int,
        mix_dim: int,
        ratio1: int,
        ratio2: int,
        act_layer: type[nn.Module] = nn.GELU,
        last: bool = False,
    ) -> None:
        super().__init__()
        self.last = last
        hidden1 = ratio1 * mix_dim
        hidden2 = ratio2 * dim
        self.inter1_norm = nn.BatchNorm2d(mix_dim)
        self.inter1_fc1 = nn.Conv2d(mix_dim, hidden1, 1)
        self.inter1_conv = _dwconv(hidden1, (3, 3))
        self.inter1_fc2 = nn.Conv2d(hidden1, mix_dim, 1)
        self.inter2_norm = nn.BatchNorm2d(dim)
        self.inter2_fc1 = nn.Conv2d(dim, hidden2, 1)
        self.inter2_conv = _dwconv(hidden2, (3, 3))
        self.inter2_fc2 = None if last else nn.Conv2d(hidden2, dim, 1)
        self.act = act_layer()

    def forward(self, memory: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        f = f + self.inter1_fc2(self.inter1_conv(self.act(self.inter1_fc1(self.inter1_norm(f)))))
        y = torch.cat([memory, f], dim=1)
        h = self.inter2_conv(self.act(self.inter2_fc1(self.inter2_norm(y))))
        if self.inter2_fc2 is None:
            return h
        return y + self.inter2_fc2(h)


# ---------------------------------------------------------------------------
# The block
# ---------------------------------------------------------------------------


class CAREBlock(nn.Module):
    """One CARE block on ``dim = 4g`` channels; see the module docstring."""

    def __init__(
        self,
        dim: int,
        ratio1: int,
        ratio2: int,
        use_attention: bool,
        head_dim: int,
        act_layer: type[nn.Module] = nn.GELU,
        last: bool = False,
    ) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"block width must be a multiple of 4, got {dim}")
        self.dim = dim
        self.mem_dim = dim // 4
        self.last = last
        mix_dim = dim - self.mem_dim
        self.token_mixer = TokenMixer(self.mem_dim, use_attention, head_dim)
        self.inter_layer = InterLayer(dim, mix_dim, ratio1, ratio2, act_layer, last=last)
        self.gamma = None if last else nn.Parameter(torch.ones(dim))
        self.out_chs = ratio2 * dim if last else dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        memory, mixed = x.split([self.mem_dim, self.dim - self.mem_dim], dim=1)
        y = self.inter_layer(memory, self.token_mixer(mixed))
        if self.gamma is None:
            return y
        return x + self.gamma.view(1, -1, 1, 1) * y


# ---------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------


class CAREStage(nn.Module):
    """Optional downsampling (BatchNorm then 2x2 stride-2 conv) followed by CARE blocks."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        ratio1: int,
        ratio2: int,
        use_attention: bool,
        head_dim: int,
        downsample: bool,
        act_layer: type[nn.Module] = nn.GELU,
        last_stage: bool = False,
    ) -> None:
        super().__init__()
        self.downsample: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(in_chs), nn.Conv2d(in_chs, out_chs, 2, stride=2))
            if downsample
            else nn.Identity()
        )
        self.blocks = nn.Sequential(
            *[
                CAREBlock(
                    out_chs,
                    ratio1,
                    ratio2,
                    use_attention,
                    head_dim,
                    act_layer,
                    last=last_stage and i == depth - 1,
                )
                for i in range(depth)
            ]
        )
        self.out_chs = ratio2 * out_chs if last_stage else out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------


class ClassifierHead(nn.Module):
    """Global average pool -> GELU -> LayerNorm -> Linear (the official head)."""

    def __init__(self, in_chs: int, num_classes: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.act = act_layer()
        self.norm = nn.LayerNorm(in_chs, eps=1e-6)
        self.fc = nn.Linear(in_chs, num_classes)

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(x.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(x))


@dataclass(frozen=True)
class CAREConfig:
    """Architecture hyper-parameters of one CARE variant."""

    depths: tuple[int, ...] = (2, 4, 8, 4)
    widths: tuple[int, ...] = (32, 64, 128, 256)
    ratios: tuple[tuple[int, int], ...] = ((2, 2), (2, 4), (4, 4), (4, 4))
    attention_stages: tuple[bool, ...] = (False, False, True, True)
    head_dims: tuple[int, ...] = (16, 16, 16, 32)
    in_chans: int = 3
    num_classes: int = 1000
    distillation: bool = True
    pretrained_cfg: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PRETRAINED_CFG))

    def __post_init__(self) -> None:
        n = len(self.depths)
        for name in ("widths", "ratios", "attention_stages", "head_dims"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"CAREConfig.{name} needs {n} entries, one per stage")
        if n != 4:
            raise ValueError("CARE has exactly four stages (strides 4, 8, 16, 32)")

    @property
    def head_width(self) -> int:
        """Channels at stride 32 after the widening last block: ``r2 * C`` of stage 4."""
        return self.ratios[-1][1] * self.widths[-1]


class CARE(nn.Module):
    """The CARE classification network (and dense-prediction backbone).

    ``forward`` returns the official eval output: the mean of the ``head`` and
    ``dist_head`` logits. ``forward_features`` gives the stride-32 map;
    ``forward_intermediates`` gives the four stage outputs for a neck, described
    by ``feature_info``.
    """

    def __init__(self, cfg: CAREConfig, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.pretrained_cfg = dict(cfg.pretrained_cfg)
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_chans, cfg.widths[0], 4, stride=4), nn.BatchNorm2d(cfg.widths[0])
        )
        self.feature_info: list[dict[str, Any]] = []
        stages: list[CAREStage] = []
        in_chs = cfg.widths[0]
        for i, depth in enumerate(cfg.depths):
            stage = CAREStage(
                in_chs,
                cfg.widths[i],
                depth,
                cfg.ratios[i][0],
                cfg.ratios[i][1],
                cfg.attention_stages[i],
                cfg.head_dims[i],
                downsample=i > 0,
                act_layer=act_layer,
                last_stage=i == len(cfg.depths) - 1,
            )
            stages.append(stage)
            self.feature_info.append(
                {"num_chs": stage.out_chs, "reduction": 2 ** (i + 2), "module": f"stages.{i}"}
            )
            in_chs = cfg.widths[i]
        self.stages = nn.Sequential(*stages)
        self.num_features = cfg.head_width
        self.head: nn.Module = self._make_head(act_layer)
        self.dist_head: nn.Module | None = self._make_head(act_layer) if cfg.distillation else None

    def _make_head(self, act_layer: type[nn.Module]) -> nn.Module:
        if self.num_classes <= 0:
            return nn.Identity()
        return ClassifierHead(self.num_features, self.num_classes, act_layer)

    def reset_classifier(self, num_classes: int, distillation: bool = False) -> None:
        """Replace the heads with fresh ones for ``num_classes`` (0 removes them)."""
        self.num_classes = num_classes
        self.head = self._make_head(nn.GELU)
        self.dist_head = self._make_head(nn.GELU) if distillation and num_classes > 0 else None

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs at strides 4, 8, 16 and 32 (see ``feature_info``)."""
        check_input_size(x.shape[-2], x.shape[-1])
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-32 feature map, ``num_features`` (the head width) channels."""
        check_input_size(x.shape[-2], x.shape[-1])
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits as the official eval computes them: the mean of both heads.

        Without classes (``num_classes=0``) this is the pooled feature.
        """
        if not isinstance(self.head, ClassifierHead):
            return x.mean(dim=(2, 3))
        if pre_logits:
            return self.head.pre_logits(x)
        logits: torch.Tensor = self.head(x)
        if self.dist_head is not None:
            logits = (logits + self.dist_head(x)) / 2
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------

CARE_CONFIGS: dict[str, CAREConfig] = {
    "care_s0": CAREConfig(
        depths=(2, 4, 8, 4),
        widths=(32, 64, 128, 256),
        ratios=((2, 2), (2, 4), (4, 4), (4, 4)),
    ),
    "care_s1": CAREConfig(
        depths=(3, 6, 10, 6),
        widths=(32, 64, 128, 256),
        ratios=((2, 4), (2, 4), (4, 4), (4, 4)),
    ),
    "care_s2": CAREConfig(
        depths=(3, 6, 10, 6),
        widths=(32, 64, 192, 384),
        ratios=((4, 4), (4, 4), (4, 4), (4, 4)),
    ),
    # A tiny configuration with the same structure, for tests and small demo models.
    "care_tiny": CAREConfig(
        depths=(1, 1, 2, 1),
        widths=(16, 32, 64, 64),
        ratios=((2, 2), (2, 2), (2, 2), (2, 2)),
        head_dims=(16, 16, 16, 16),
    ),
}
