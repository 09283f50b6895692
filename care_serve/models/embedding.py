"""A CARE network that answers its image embedding instead of class logits."""

from __future__ import annotations

import torch
from torch import nn

from care_serve.models.care import CARE

__all__ = ["CAREEmbedder"]


class CAREEmbedder(nn.Module):
    """``forward_head(forward_features(x), pre_logits=True)`` of a CARE classifier.

    The pooled, normalised features the classifier's last linear layer reads (for
    CARE-S0, 1024 values). ``fuse_model`` fuses the network inside, and the fused
    head still answers these features exactly.
    """

    def __init__(self, network: CARE) -> None:
        super().__init__()
        self.network = network

    @property
    def dim(self) -> int:
        """The length of the vectors."""
        return int(self.network.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.forward_head(self.network.forward_features(x), pre_logits=True)
