"""Exact inference-time fusion of CARE models (BatchNorm, layer scale, heads, channel groups).

``fuse_model(model)`` returns a fused deep copy; the original is untouched. It
walks any module tree (a bare ``CARE``, a backbone, a detector holding one) and
replaces, bottom-up, every module that has a fusion rule:

- a module with its own ``fuse()`` (or timm-style ``reparameterize()``) method;
- ``nn.Sequential`` runs of Conv2d -> BatchNorm2d (stem) and BatchNorm2d ->
  unpadded Conv2d (downsampling), folded into one convolution;
- ``CAREBlock`` -> :class:`FusedCAREBlock`: the inter BatchNorms fold into the
  1x1 convs that follow them; the layer scale ``gamma`` is pushed into the
  producers of ``y`` (token-mixer convs, inter 1's ``fc2``, a depthwise 1x1 scale
  on the memory channels) and divided out of the consumers (inter 1's and inter
  2's ``fc1``), inter 2's ``fc2`` absorbs it; linear attention runs in the
  ``(B, heads, d, N)`` layout that NCHW reshapes to for free. Per-channel scales
  are 1x1 depthwise convs so onnxruntime keeps the block in its blocked layout.
  (One depthwise conv over all channels with zero-padded kernels instead of the
  split was measured and rejected: see ``docs/performance.md``.)
- ``ClassifierHead`` -> :class:`FusedHead` (LayerNorm affine folded into the
  Linear), and a ``CARE`` network's ``head`` + ``dist_head`` merged into one.

All rewrites are exact in real arithmetic; in float32 the fused model agrees to a
relative error around 1e-7 (see ``tests/unit/models/test_fuse.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from care_serve.models.care import CARE, CAREBlock, ClassifierHead

__all__ = [
    "FusedCAREBlock",
    "FusedHead",
    "FusedLinearAttention",
    "StripConv",
    "fold_bn_after_conv",
    "fold_bn_before_conv",
    "fuse_care_block",
    "fuse_model",
    "fuse_module",
    "register_fuser",
]

# Layer scales with a smaller magnitude are not divided out of inter 2's fc1
# (an exact fold in real arithmetic, but 1/gamma must stay a normal float).
MIN_FOLDABLE_GAMMA = 1e-10

Fuser = Callable[[Any], nn.Module]
_FUSERS: dict[type[nn.Module], Fuser] = {}


def register_fuser(module_type: type[nn.Module]) -> Callable[[Fuser], Fuser]:
    """Decorator: register ``fn(module) -> fused module`` for modules of ``module_type``."""

    def wrap(fn: Fuser) -> Fuser:
        _FUSERS[module_type] = fn
        return fn

    return wrap


# ---------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(s, t)`` with ``bn(x) == s * x + t`` in eval mode."""
    assert bn.running_var is not None and bn.running_mean is not None
    s = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.double()
    t = -bn.running_mean.double() * s
    if bn.bias is not None:
        t = t + bn.bias.double()
    return s, t


def _foldable_bn(bn: nn.Module) -> bool:
    return (
        isinstance(bn, nn.BatchNorm2d)
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.running_var is not None
    )


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    out = nn.Conv2d(
        weight.shape[1] * conv.groups,
        weight.shape[0],
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    )
    dtype = conv.weight.dtype
    out.weight.data = weight.to(dtype).contiguous()
    assert out.bias is not None
    out.bias.data = bias.to(dtype).contiguous()
    return out


def _conv_bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        return torch.zeros(conv.out_channels, dtype=torch.float64)
    return conv.bias.double()


def fold_bn_after_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution (always exact)."""
    s, t = _bn_scale_shift(bn)
    weight = conv.weight.double() * s.view(-1, 1, 1, 1)
    return _new_conv(conv, weight, _conv_bias(conv) * s + t)


def fold_bn_before_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv(bn(x))`` as one convolution; exact only for an unpadded, ungrouped conv."""
    if any(p != 0 for p in conv.padding) or conv.groups != 1:
        raise ValueError(
            "a BatchNorm before a convolution folds exactly only into an unpadded, "
            f"ungrouped convolution; got padding={conv.padding}, groups={conv.groups}"
        )
    s, t = _bn_scale_shift(bn)
    w = conv.weight.double()
    weight = w * s.view(1, -1, 1, 1)
    bias = _conv_bias(conv) + (w * t.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
    return _new_conv(conv, weight, bias)


def _can_fold_before(bn: nn.Module, conv: nn.Module) -> bool:
    return (
        _foldable_bn(bn)
        and isinstance(conv, nn.Conv2d)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and all(p == 0 for p in conv.padding)
    )


@register_fuser(nn.Sequential)
def _fuse_sequential(seq: nn.Sequential) -> nn.Module:
    """Fold Conv2d -> BatchNorm2d and BatchNorm2d -> unpadded Conv2d pairs of a Sequential."""
    items = list(seq)
    out: list[nn.Module] = []
    i = 0
    changed = False
    while i < len(items):
        cur = items[i]
        nxt = items[i + 1] if i + 1 < len(items) else None
        if isinstance(cur, nn.Conv2d) and nxt is not None and _foldable_bn(nxt):
            out.append(fold_bn_after_conv(cur, nxt))  # type: ignore[arg-type]
            i, changed = i + 2, True
        elif nxt is not None and _can_fold_before(cur, nxt):
            out.append(fold_bn_before_conv(cur, nxt))  # type: ignore[arg-type]
            i, changed = i + 2, True
        else:
            out.append(cur)
            i += 1
    if not changed:
        return seq
    return out[0] if len(out) == 1 else nn.Sequential(*out)


# ---------------------------------------------------------------------------
# Export-friendly reshapes
# ---------------------------------------------------------------------------


class _ReshapeKeepBatch(torch.autograd.Function):
    """``x.reshape(x.shape[0], *dims)``, exported as ONE ``Reshape`` with a constant shape.

    The TorchScript exporter would otherwise emit Shape/Gather/Unsqueeze/Concat
    chains for the dynamic batch size; ONNX's ``0`` (copy this dimension) avoids them.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return x.reshape(x.shape[0], *dims)

    @staticmethod
    def symbolic(g: Any, x: Any, dims: tuple[int, ...]) -> Any:
        shape = g.op("Constant", value_t=torch.tensor([0, *dims], dtype=torch.int64))
        return g.op("Reshape", x, shape)


def reshape_keep_batch(x: torch.Tensor, *dims: int) -> torch.Tensor:
    """Reshape to ``(batch, *dims)`` (one ``-1`` allowed), export-friendly."""
    out: torch.Tensor = _ReshapeKeepBatch.apply(x, tuple(dims))
    return out


# ---------------------------------------------------------------------------
# Fused CARE block
# ---------------------------------------------------------------------------


def _copy_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A new conv shaped like ``conv`` holding ``weight`` / ``bias`` (float64 math, float32 out)."""
    return _new_conv(conv, weight.double(), bias.double())


def _scaled_conv(conv: nn.Conv2d, scale: torch.Tensor | None) -> nn.Conv2d:
    """``scale[c] * conv(x)[c]`` as one conv (a copy of ``conv`` when ``scale`` is None)."""
    w, b = conv.weight.double(), _conv_bias(conv)
    if scale is not None:
        w, b = w * scale.view(-1, 1, 1, 1), b * scale
    return _copy_conv(conv, w, b)


def _channel_scale(channels: int, scale: torch.Tensor | None) -> nn.Conv2d:
    """``scale[c] * x[c]`` as a bias-free depthwise 1x1 conv (identity when ``scale`` is None)."""
    conv = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
    weight = torch.ones(channels) if scale is None else scale.float()
    conv.weight.data = weight.reshape(channels, 1, 1, 1).clone()
    return conv


class FusedLinearAttention(nn.Module):
    """CARE's linear attention on ``a`` (``v = a``), optionally with a per-channel output scale.

    Runs in the ``(B, heads, head_dim, N)`` layout that NCHW reshapes to for
    free; ``1 / N`` and the normaliser are applied once to the output.
    """

    def __init__(self, qk: nn.Conv2d, num_heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.qk = qk
        self.num_heads = num_heads
        self.head_dim = qk.in_channels // num_heads
        self.eps = eps
        # Per-channel output scale (the folded layer scale) as a depthwise 1x1 conv:
        # onnxruntime then keeps the block's concat in its blocked NCHWc layout.
        self.scale = _channel_scale(qk.in_channels, None)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h, d = self.num_heads, self.head_dim
        qk = F.elu(reshape_keep_batch(self.qk(a), 2 * h, d, -1)) + 1.0  # (B, 2h, d, N)
        q, k = qk.split(h, dim=1)
        v = reshape_keep_batch(a, h, d, -1)
        kv = v @ k.transpose(-1, -2)  # (B, h, d_v, d_k): sum over the N tokens
        k_mean = k.mean(dim=-1, keepdim=True).transpose(-1, -2)  # (B, h, 1, d_k)
        out = (kv @ q) / ((k_mean @ q + self.eps) * q.shape[-1])  # (B, h, d_v, N)
        out_scaled: torch.Tensor = self.scale(out.reshape_as(a))
        return out_scaled


class FusedCAREBlock(nn.Module):
    """A CARE block with its BatchNorms, layer scale and strip convs folded.

    ``m, a, c3, c7 = split(x)``; ``f = cat(mix(a), dw3(c3), dw7(c7))``;
    ``f = f + fc2a(dw1(act(fc1a(f))))``; ``y = cat(m, f)``;
    ``out = x + y + fc2b(dw2(act(fc1b(y))))``. With the layer scale folded,
    ``f`` and ``y`` come out already multiplied by ``gamma`` (``mem_scale``, a
    depthwise 1x1 conv, on ``m``); otherwise ``gamma`` stays a buffer applied
    to ``y``. The network's last block returns ``dw2(act(fc1b(y)))``.
    """

    def __init__(
        self,
        dim: int,
        global_branch: nn.Module,
        dw3: nn.Conv2d,
        dw7: nn.Conv2d,
        inter1: tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d],
        inter2: tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d | None],
        act: nn.Module,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.mem_dim = dim // 4
        self.global_branch = global_branch
        self.dw3, self.dw7 = dw3, dw7
        self.fc1a, self.dw1, self.fc2a = inter1
        self.fc1b, self.dw2, self.fc2b = inter2
        self.act = act
        self.mem_scale: nn.Conv2d | None = None
        self.gamma: torch.Tensor | None
        self.register_buffer("gamma", None)
        self.last = self.fc2b is None
        self.out_chs = self.dw2.out_channels if self.last else dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.mem_dim
        m, a, c3, c7 = x.split(g, dim=1)
        f = torch.cat([self.global_branch(a), self.dw3(c3), self.dw7(c7)], dim=1)
        f = f + self.fc2a(self.dw1(self.act(self.fc1a(f))))
        if self.mem_scale is not None:
            m = self.mem_scale(m)
        y = torch.cat([m, f], dim=1)
        h = self.dw2(self.act(self.fc1b(y)))
        if self.fc2b is None:
            return h
        if self.gamma is not None:
            y = y * self.gamma
        return x + (y + self.fc2b(h))  # this order lets onnxruntime fuse the add into fc2b


class StripConv(nn.Module):
    """The early stages' global branch: depthwise 11x1 plus 1x11."""

    def __init__(self, conv_h: nn.Conv2d, conv_w: nn.Conv2d) -> None:
        super().__init__()
        self.conv_h, self.conv_w = conv_h, conv_w

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv_h(a) + self.conv_w(a)
        return out


def _gamma_foldable(gamma: torch.Tensor) -> bool:
    g = gamma.detach().double().abs()
    return bool(torch.isfinite(g).all() and (g >= MIN_FOLDABLE_GAMMA).all())


def _scale_inputs(conv: nn.Conv2d, scale: torch.Tensor | None) -> nn.Conv2d:
    """``conv(x / scale)`` as one conv (input channels divided by ``scale``)."""
    if scale is None:
        return conv
    return _copy_conv(conv, conv.weight.double() / scale.view(1, -1, 1, 1), _conv_bias(conv))


@torch.no_grad()
def fuse_care_block(block: CAREBlock) -> FusedCAREBlock:
    """The exact fused equivalent of an eval-mode ``CAREBlock``.

    BatchNorms fold into the 1x1 convs after them. When ``gamma`` is foldable
    (finite, no tiny entries) it is pushed into the producers of ``y`` (the
    token mixer convs, inter 1's ``fc2``, a per-channel scale on the memory) and
    divided out of the consumers (inter 1's and inter 2's ``fc1``); inter 2's
    ``fc2`` always absorbs it.
    """
    mixer, inter = block.token_mixer, block.inter_layer
    g = block.mem_dim
    gamma = None if block.gamma is None else block.gamma.detach().double()
    fold = gamma is not None and _gamma_foldable(gamma)
    scale = gamma if fold else None
    s_m, s_a, s_c3, s_c7, s_f = (
        (gamma[:g], gamma[g : 2 * g], gamma[2 * g : 3 * g], gamma[3 * g :], gamma[g:])
        if scale is not None and gamma is not None
        else (None, None, None, None, None)
    )

    global_branch: nn.Module
    if mixer.use_attention:
        attention = FusedLinearAttention(
            _copy_conv(mixer.qk, mixer.qk.weight, _conv_bias(mixer.qk)), mixer.num_heads
        )
        if s_a is not None:
            attention.scale = _channel_scale(block.mem_dim, s_a)
        global_branch = attention
    else:
        global_branch = StripConv(
            _scaled_conv(mixer.dwconvatt_1, s_a), _scaled_conv(mixer.dwconvatt_2, s_a)
        )
    fc1a = _scale_inputs(fold_bn_before_conv(inter.inter1_norm, inter.inter1_fc1), s_f)
    fc1b = _scale_inputs(fold_bn_before_conv(inter.inter2_norm, inter.inter2_fc1), scale)
    fc2b = None
    if inter.inter2_fc2 is not None:
        assert gamma is not None
        fc2b = _scaled_conv(inter.inter2_fc2, gamma)
    fused = FusedCAREBlock(
        block.dim,
        global_branch,
        _scaled_conv(mixer.dwconv1, s_c3),
        _scaled_conv(mixer.dwconv2, s_c7),
        (fc1a, _scaled_conv(inter.inter1_conv, None), _scaled_conv(inter.inter1_fc2, s_f)),
        (fc1b, _scaled_conv(inter.inter2_conv, None), fc2b),
        copy.deepcopy(inter.act),
    )
    if s_m is not None:
        fused.mem_scale = _channel_scale(block.mem_dim, s_m)
    elif gamma is not None:
        fused.gamma = gamma.float().view(1, -1, 1, 1).clone()
    return fused.eval()


register_fuser(CAREBlock)(fuse_care_block)


# ---------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------


class FusedHead(ClassifierHead):
    """Pool -> GELU -> affine-free LayerNorm -> Linear: one or several merged heads.

    A ``ClassifierHead`` (so ``CARE.forward_head`` treats it as one) whose
    LayerNorm affine lives in ``fc``. ``pre_logits`` still returns the original
    head's normalised features (that affine is kept aside for it).
    """

    def __init__(self, in_chs: int, num_classes: int, eps: float = 1e-6) -> None:
        super().__init__(in_chs, num_classes, nn.GELU)
        self.norm = nn.LayerNorm(in_chs, eps=eps, elementwise_affine=False)
        self.norm_weight: torch.Tensor
        self.norm_bias: torch.Tensor
        self.register_buffer("norm_weight", torch.ones(in_chs))
        self.register_buffer("norm_bias", torch.zeros(in_chs))

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(x.mean(dim=(2, 3)))) * self.norm_weight + self.norm_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.norm(self.act(x.mean(dim=(2, 3)))))
        return out

    @torch.no_grad()
    def merge_mean(self, other: FusedHead) -> FusedHead:
        """One head computing ``(self(x) + other(x)) / 2``."""
        merged = copy.deepcopy(self)
        merged.fc.weight.data = (self.fc.weight.double() + other.fc.weight.double()).div(2).float()
        merged.fc.bias.data = (self.fc.bias.double() + other.fc.bias.double()).div(2).float()
        return merged


def _is_exact_gelu(act: nn.Module) -> bool:
    return isinstance(act, nn.GELU) and act.approximate == "none"


@register_fuser(ClassifierHead)
@torch.no_grad()
def fuse_classifier_head(head: ClassifierHead) -> nn.Module:
    """Fold the LayerNorm affine into the Linear layer."""
    if isinstance(head, FusedHead) or not _is_exact_gelu(head.act):
        return head
    fused = FusedHead(head.fc.in_features, head.fc.out_features, head.norm.eps)
    w = head.fc.weight.double()
    ln_w = head.norm.weight.double() if head.norm.weight is not None else torch.ones(w.shape[1])
    ln_b = head.norm.bias.double() if head.norm.bias is not None else torch.zeros(w.shape[1])
    fused.fc.weight.data = (w * ln_w.view(1, -1)).float()
    fused.fc.bias.data = (head.fc.bias.double() + w @ ln_b).float()
    fused.norm_weight.copy_(ln_w.float())
    fused.norm_bias.copy_(ln_b.float())
    return fused.eval()


@register_fuser(CARE)
def _fuse_care(model: CARE) -> nn.Module:
    """Merge the (already fused) ``head`` and ``dist_head``: eval returns their mean."""
    if isinstance(model.head, FusedHead) and isinstance(model.dist_head, FusedHead):
        model.head = model.head.merge_mean(model.dist_head)
        model.dist_head = None
    return model


# ---------------------------------------------------------------------------
# The walker
# ---------------------------------------------------------------------------


def fuse_module(module: nn.Module) -> nn.Module:
    """Apply the fusion rule of ``module`` itself (children are not visited)."""
    fuser = _FUSERS.get(type(module))
    if fuser is None:  # subclasses of CARE parts (never of Sequential: its forward may differ)
        fuser = next(
            (
                _FUSERS[c]
                for c in type(module).__mro__[1:]
                if c in _FUSERS and c is not nn.Sequential
            ),
            None,
        )
    if fuser is not None:
        return fuser(module)
    for name in ("fuse", "reparameterize"):
        method = getattr(module, name, None)
        if callable(method):
            result = method()
            return result if isinstance(result, nn.Module) else module
    return module


def _fuse_tree(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        fused = _fuse_tree(child)
        if fused is not child:
            setattr(module, name, fused)
    return fuse_module(module)


@torch.no_grad()
def fuse_model(model: nn.Module) -> nn.Module:
    """A fused, eval-mode deep copy of ``model`` with the same outputs; ``model`` is untouched.

    Works on any module tree: every CARE part inside (blocks, stems,
    downsampling, heads) is fused, other modules are kept (or fused by their
    own ``fuse()`` / ``reparameterize()`` method, or conv/BN pairs in a Sequential).
    """
    fused = copy.deepcopy(model).eval()
    return _fuse_tree(fused).eval()
