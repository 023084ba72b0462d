"""GraFIQs scores for a batch of images, in plain torch: the official variant of the scoring engine.

    scorer = GraFIQsScorer(load_backbone("iresnet50", "181952backbone.pth"))
    result = scorer(images)             # normalised float images [B, 3, 112, 112]
    result.scores["image"]              # sum of |dL/dx| per image: larger = lower quality

`GraFIQsScorer` is `grafiqs.quality.groups.VariantScorer` with the official loss and `l1`,
its columns renamed by group; the engine's docstring explains the options.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from grafiqs.quality.discrepancy import OFFICIAL_LOSS
from grafiqs.quality.groups import (  # noqa: F401 (the status codes are part of this module's API)
    ACTIVATION_GROUPS,
    PRECISIONS,
    STATUS_GRADIENT,
    STATUS_INPUT,
    STATUS_LOSS,
    STATUS_MESSAGES,
    STATUS_OK,
    Variant,
    VariantScorer,
    loss_column,
)

# What the official code differentiates: the input image and the four stage outputs.
GROUPS = ACTIVATION_GROUPS


@dataclass
class GraFIQsResult:
    scores: dict[str, torch.Tensor]  # group -> [B] sum of absolute gradients (the official raw magnitude)
    bns_loss: torch.Tensor  # [B] the BNS loss itself
    embedding: torch.Tensor  # [B, D] the FR embedding of the same forward pass
    status: torch.Tensor  # [B] int codes, see STATUS_MESSAGES: 0 ok, else why the scores are NaN
    gradients: dict[str, torch.Tensor] | None = None  # group -> dL/d(group), with keep_gradients=True (maps to look at)


class GraFIQsScorer:
    """Scores batches with a frozen BatchNorm network that has `forward_stages` (see `IResNet`).

    `groups` may be any engine group (`image`, `block1..block4`, `params:...`); only the asked
    ones are computed, so `("block4",)` skips the backward through everything before block4.
    `precision` ("32" exact, "bf16" approximate), `channels_last` and `compile`: see `VariantScorer`.
    """

    def __init__(
        self, model: nn.Module, groups: tuple[str, ...] = GROUPS, precision: str = "32", channels_last: bool = False,
        compile: bool | str = False,
    ):
        self.groups = tuple(groups)
        self.engine = VariantScorer(model, (OFFICIAL_LOSS,), self.groups, ("l1",), precision=precision,
                                    channels_last=channels_last, compile=compile)

    def __call__(self, images: torch.Tensor, keep_gradients: bool = False) -> GraFIQsResult:
        result = self.engine(images, keep_gradients)
        kept = result.gradients
        return GraFIQsResult(
            scores={g: result.columns[Variant(OFFICIAL_LOSS, g, "l1").name] for g in self.groups},
            bns_loss=result.columns[loss_column(OFFICIAL_LOSS)],
            embedding=result.embedding,
            status=result.status,
            gradients=None if kept is None else {
                g: kept[f"{OFFICIAL_LOSS.name}|group={g}"] for g in self.engine.activation_groups},
        )
