"""PyTorch builders for ``format: pytorch`` detection and segmentation packages.

Registered with ``register_builder`` by ``care_serve.backends.torch_backend`` when
it is imported (so the ONNX-only server never imports this module or torch).

A dense PyTorch package holds the whole network's ``state_dict`` (bare, or under
``state_dict`` / ``model`` / ``state_dict_ema`` / ``model_ema``, as
``torch.save`` writes it), loaded strictly. The network is rebuilt as
``CAREDetector(architecture, num_classes, **model_kwargs)`` or
``CARESegmenter(...)``; ``model_kwargs`` may be the network's ``init_kwargs``
(its ``variant`` and ``num_classes`` must then agree with the manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from care_serve.errors import ModelStoreError
from care_serve.store.manifest import Manifest

__all__ = ["build_detector", "build_segmenter"]


def _kwargs(manifest: Manifest) -> dict[str, Any]:
    """``model_kwargs`` without the entries the manifest already says (checked to agree)."""
    kwargs = dict(manifest.model_kwargs)
    given = (("variant", manifest.architecture), ("num_classes", manifest.num_classes))
    for key, expected in given:
        if key in kwargs and kwargs.pop(key) != expected:
            raise ModelStoreError(
                f"{manifest.name}/{manifest.version}: model_kwargs.{key} contradicts the "
                f"manifest ({expected!r})"
            )
    return kwargs


def _build(cls: type[nn.Module], manifest: Manifest, weights: Path) -> nn.Module:
    from care_serve.models.checkpoint import load_checkpoint

    try:
        model = cls(manifest.architecture, manifest.num_classes, **_kwargs(manifest))
    except TypeError as exc:
        raise ModelStoreError(
            f"{manifest.name}/{manifest.version}: model_kwargs {manifest.model_kwargs} do not fit "
            f"{cls.__name__}: {exc}"
        ) from None
    load_checkpoint(model, weights)
    return model


def build_detector(manifest: Manifest, weights: Path) -> nn.Module:
    """``CAREDetector`` with the package's weights (outputs ``cls_logits``, ``box_ltrb``)."""
    from care_serve.models.detection import CAREDetector

    return _build(CAREDetector, manifest, weights)


def build_segmenter(manifest: Manifest, weights: Path) -> nn.Module:
    """``CARESegmenter`` with the package's weights (output ``seg_logits``)."""
    from care_serve.models.segmentation import CARESegmenter

    return _build(CARESegmenter, manifest, weights)
