"""GraFIQs scores for a batch of images, in plain torch.

    scorer = GraFIQsScorer(load_backbone("iresnet50", "181952backbone.pth"))
    result = scorer(images)             # normalised float images [B, 3, 112, 112]
    result.scores["image"]              # sum of |dL/dx| per image: larger = lower quality
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from grafiqs.models.iresnet import STAGE_NAMES
from grafiqs.quality.bn_stats import BNInputStatistics
from grafiqs.quality.discrepancy import bns_loss

# What the official code differentiates: the input image and the four stage outputs.
GROUPS = ("image",) + STAGE_NAMES


@dataclass
class GraFIQsResult:
    scores: dict[str, torch.Tensor]  # group -> [B] sum of absolute gradients (the official raw magnitude)
    bns_loss: torch.Tensor  # [B] the BNS loss itself
    embedding: torch.Tensor  # [B, D] the FR embedding of the same forward pass


class GraFIQsScorer:
    """Scores batches with a frozen BatchNorm network that has `forward_stages` (see `IResNet`)."""

    def __init__(self, model: nn.Module, groups: tuple[str, ...] = GROUPS):
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown gradient groups {sorted(unknown)}; choose from {GROUPS}")
        self.model = model.eval().requires_grad_(False)  # no weight-gradient work in the backward
        self.groups = tuple(groups)
        self.statistics = BNInputStatistics(model)

    def __call__(self, images: torch.Tensor) -> GraFIQsResult:
        with torch.enable_grad():
            images = images.detach().requires_grad_(True)
            with self.statistics.record() as sample_statistics:
                embedding, stage_outputs = self.model.forward_stages(images)
            loss = bns_loss(sample_statistics, self.statistics.running())
            differentiated = {"image": images, **stage_outputs}
            gradients = torch.autograd.grad(loss.sum(), [differentiated[g] for g in self.groups])
        scores = {g: grad.abs().flatten(1).sum(1) for g, grad in zip(self.groups, gradients)}
        return GraFIQsResult(scores=scores, bns_loss=loss.detach(), embedding=embedding.detach())
