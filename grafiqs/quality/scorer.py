"""GraFIQs scores for a batch of images, in plain torch.

    scorer = GraFIQsScorer(load_backbone("iresnet50", "181952backbone.pth"))
    result = scorer(images)             # normalised float images [B, 3, 112, 112]
    result.scores["image"]              # sum of |dL/dx| per image: larger = lower quality
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from grafiqs.models.iresnet import STAGE_NAMES
from grafiqs.quality.bn_stats import BNInputStatistics
from grafiqs.quality.discrepancy import bns_loss

# What the official code differentiates: the input image and the four stage outputs.
GROUPS = ("image",) + STAGE_NAMES
PRECISIONS = ("32", "bf16")
# Why a sample has no score (scores.csv `status`); checked in this order, the first that applies wins.
STATUS_OK, STATUS_INPUT, STATUS_LOSS, STATUS_GRADIENT = 0, 1, 2, 3
STATUS_MESSAGES = {
    STATUS_OK: "ok",
    STATUS_INPUT: "nan: the input image holds NaN/Inf values",
    STATUS_LOSS: "nan: the BNS loss is not finite (NaN/Inf activations; check the weights)",
    STATUS_GRADIENT: "nan: a gradient is not finite (overflow; try --precision 32)",
}


def numeric_status(images: torch.Tensor, loss: torch.Tensor, scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample status code: why (if at all) the sample's scores cannot be trusted."""
    status = torch.full_like(loss, STATUS_GRADIENT, dtype=torch.int64)
    status[torch.stack([torch.isfinite(v) for v in scores.values()]).all(0)] = STATUS_OK
    status[~torch.isfinite(loss)] = STATUS_LOSS
    status[~torch.isfinite(images.flatten(1)).all(1)] = STATUS_INPUT
    return status


@dataclass
class GraFIQsResult:
    scores: dict[str, torch.Tensor]  # group -> [B] sum of absolute gradients (the official raw magnitude)
    bns_loss: torch.Tensor  # [B] the BNS loss itself
    embedding: torch.Tensor  # [B, D] the FR embedding of the same forward pass
    status: torch.Tensor  # [B] int codes, see STATUS_MESSAGES: 0 ok, else why the scores are NaN
    gradients: dict[str, torch.Tensor] | None = None  # group -> dL/d(group), with keep_gradients=True (maps to look at)


class GraFIQsScorer:
    """Scores batches with a frozen BatchNorm network that has `forward_stages` (see `IResNet`).

    `precision="32"` is exact (the default). `precision="bf16"` runs the convolutions
    under bfloat16 autocast, an opt-in approximation whose rank fidelity is measured in
    benchmarks/RESULTS.md; the statistics and the loss stay in float32 either way.
    `channels_last` changes only the memory layout, not the numbers. `compile=True` runs the
    four stages through `torch.compile` (fused elementwise work, same float32 math up to
    rounding: within 1e-4 relative of the eager scores); the first batch pays the compilation
    (about 85 s for iresnet50 on 2 cores, ~20 s once inductor's cache holds it).
    On Linux CPUs, `grafiqs.allocator.retain_freed_memory()` (which score.py calls) makes
    batches 1.1-1.2x faster.
    """

    def __init__(
        self, model: nn.Module, groups: tuple[str, ...] = GROUPS, precision: str = "32", channels_last: bool = False,
        compile: bool = False,
    ):
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown gradient groups {sorted(unknown)}; choose from {GROUPS}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.model = model.eval().requires_grad_(False)  # no weight-gradient work in the backward
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.groups = tuple(groups)
        self.precision = precision
        self.statistics = BNInputStatistics(model, persistent=compile)
        # torch.compile of each stage fuses the BN, PReLU and statistics passes with their backward; the
        # stage boundaries stay autograd edges, so their outputs can still be differentiated.
        self.stages = [torch.compile(stage, dynamic=False) for stage in model.stages()] if compile else None
        self.compiled_batch: int | None = None  # smaller batches are zero-padded to it: no recompilation

    def _autocast(self, device: torch.device):
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        """Zero images up to the compiled batch size; samples are independent in eval mode, so
        padding changes no real sample's numbers."""
        if self.stages is None:
            return images
        if self.compiled_batch is None or images.shape[0] > self.compiled_batch:
            self.compiled_batch = images.shape[0]
        missing = self.compiled_batch - images.shape[0]
        return torch.cat([images, images.new_zeros((missing, *images.shape[1:]))]) if missing else images

    def __call__(self, images: torch.Tensor, keep_gradients: bool = False) -> GraFIQsResult:
        count = images.shape[0]
        with torch.enable_grad():
            images = self._pad(images.detach()).contiguous(memory_format=self.memory_format).requires_grad_(True)
            with self.statistics.record() as sample_statistics, self._autocast(images.device):
                embedding, stage_outputs = self.model.forward_stages(images, self.stages)
            loss = bns_loss(sample_statistics, self.statistics.running())
            differentiated = {"image": images, **stage_outputs}
            gradients = torch.autograd.grad(loss.sum(), [differentiated[g] for g in self.groups])
        gradients = [g[:count] for g in gradients]
        images, loss, embedding = images[:count], loss[:count], embedding[:count]
        scores = {g: grad.float().abs().flatten(1).sum(1) for g, grad in zip(self.groups, gradients)}
        status = numeric_status(images.detach(), loss.detach(), scores)
        invalid = status != STATUS_OK
        if invalid.any():  # never a silent number: every group of such a sample becomes NaN
            scores = {g: values.masked_fill(invalid, float("nan")) for g, values in scores.items()}
        kept = dict(zip(self.groups, gradients)) if keep_gradients else None
        return GraFIQsResult(scores=scores, bns_loss=loss.detach(), embedding=embedding.detach().float(),
                             status=status, gradients=kept)
