"""The margin math every classification head shares (insightface's combined margin).

For an L2-normalised embedding x and L2-normalised class weights W_j, the cosine of the angle
to class j is cos(theta_j) = <x, W_j>. insightface's combined margin replaces the logit of
the target class y by

    s * (cos(m1 * theta_y + m2) - m3)

and keeps s * cos(theta_j) for every other class. ArcFace is (m1, m2, m3) = (1, 0.5, 0),
CosFace (1, 0, 0.35), SphereFace-like margins use m1 > 1.

Why the care around arccos and pi: arccos has an infinite derivative at +-1, so the cosine is
clamped slightly inside [-1, 1] first; and cos(m1 * theta + m2) stops decreasing once the
angle passes pi, which would *reward* a sample for moving further from its class. Past that
point insightface (ArcFace, `easy_margin=False`) switches to the monotonic fallback
cos(theta) - m2 * sin(pi - m2); we use the same fallback, with the penalty raised where needed
so that the fallback never lies above the margin curve at the switch (relevant for m1 != 1).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

# Keeps arccos away from its infinite slope at +-1 (1 - 1e-7 is still below 1 in float32).
_COS_EPS = 1e-7

MARGIN_PRESETS: dict[str, tuple[float, float, float]] = {
    "arcface": (1.0, 0.5, 0.0),
    "cosface": (1.0, 0.0, 0.35),
}


MARGIN_GRADIENTS = ("exact", "straight_through")


class CombinedMarginHead(nn.Module):
    """Class-weight matrix + combined margin: `forward(embeddings, labels)` -> logits [B, num_classes].

    `labels` may hold -1 for samples without a target class (insightface's convention): their
    logits are plain `s * cos`. Without labels (`labels=None`) the plain scaled cosines come back,
    which is what inference and top-1 accuracy need.

    Two arcface_torch parity switches (defaults: this project's behaviour):

    * `margin_grad="exact"` differentiates through the margin (d logit / d cos_y of the target
      is s * d cos(m1 * theta + m2) / d cos); `"straight_through"` applies the margin to the
      value only, as arcface_torch does (its margin is added under `torch.no_grad()`), so
      d logit / d cos = s for every entry. Both give the same logits.
    * `fp32=True` computes the cosines with autocast disabled, i.e. the class-centre matmul
      in float32 under mixed precision; `False` lets autocast run it in half precision.
    """

    def __init__(
        self, num_features: int, num_classes: int, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
        margin_grad: str = "exact", fp32: bool = False,
    ):
        super().__init__()
        if num_features < 1 or num_classes < 1:
            raise ValueError(f"num_features and num_classes must be >= 1, got {num_features} and {num_classes}")
        if s <= 0:
            raise ValueError(f"scale s must be > 0, got {s}")
        if m1 <= 0 or not 0.0 <= m2 < math.pi or m3 < 0:
            raise ValueError(f"margins need m1 > 0, 0 <= m2 < pi, m3 >= 0; got m1={m1}, m2={m2}, m3={m3}")
        if margin_grad not in MARGIN_GRADIENTS:
            raise ValueError(f"margin_grad must be one of {', '.join(MARGIN_GRADIENTS)}, got {margin_grad!r}")
        self.num_features, self.num_classes = int(num_features), int(num_classes)
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.margin_grad, self.fp32 = margin_grad, bool(fp32)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.num_features))
        nn.init.normal_(self.weight, std=0.01)  # as insightface's FC layer
        # theta beyond which m1 * theta + m2 > pi; None when that never happens for theta <= pi.
        threshold = (math.pi - self.m2) / self.m1
        self.theta_limit = threshold if threshold < math.pi else None
        if self.theta_limit is None:
            self.fallback_penalty = 0.0
        else:
            # insightface's `sinmm`; at least the gap that keeps the fallback below -1 at the switch.
            self.fallback_penalty = max(math.sin(math.pi - self.m2) * self.m2, 1.0 + math.cos(self.theta_limit))

    def extra_repr(self) -> str:
        return (f"num_features={self.num_features}, num_classes={self.num_classes}, s={self.s}, m1={self.m1}, m2={self.m2}, "
                f"m3={self.m3}, margin_grad={self.margin_grad}, fp32={self.fp32}")

    def cosine(self, embeddings: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """cos(theta) between each embedding and each class centre (rows of `weight`, default all), float32 result."""
        weight = self.weight if weight is None else weight
        # Under autocast (fp32=False) the matmul may run in half precision, as insightface; margins stay in fp32.
        with torch.autocast(embeddings.device.type, enabled=False) if self.fp32 else contextlib.nullcontext():
            x = F.normalize(embeddings.float(), dim=1)
            w = F.normalize(weight.float(), dim=1)
            return F.linear(x, w).float()

    def margin_cosine(self, cos_theta: torch.Tensor) -> torch.Tensor:
        """cos(m1 * theta + m2) - m3 for target cosines, with the monotonic fallback past pi."""
        cos_theta = cos_theta.clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS)
        if self.m1 == 1.0 and self.m2 == 0.0:  # CosFace: no angle needed, keep it exact and cheap
            return cos_theta - self.m3
        theta = torch.acos(cos_theta)
        with_margin = torch.cos(self.m1 * theta + self.m2) - self.m3
        if self.theta_limit is None:
            return with_margin
        fallback = cos_theta - self.fallback_penalty - self.m3
        return torch.where(theta <= self.theta_limit, with_margin, fallback)

    def margin_logits(self, cos_theta: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """s * cos_theta with the margin applied at (row, columns[row]) where columns[row] >= 0.

        Works in place on `cos_theta` (fine for the output of F.linear, whose backward does not
        need it): one [B, classes] buffer instead of three, which matters with millions of classes.
        """
        rows = torch.nonzero(columns >= 0, as_tuple=True)[0]
        targets = columns[rows]
        cos_target = cos_theta[rows, targets]
        with_margin = self.margin_cosine(cos_target)
        if self.margin_grad == "straight_through":
            with_margin = cos_target + (with_margin - cos_target).detach()
        return cos_theta.index_put_((rows, targets), with_margin).mul_(self.s)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos_theta = self.cosine(embeddings)
        if labels is None:
            return cos_theta * self.s
        labels = labels.long().view(-1)
        if labels.numel() != cos_theta.shape[0]:
            raise ValueError(f"{labels.numel()} labels for {cos_theta.shape[0]} embeddings")
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise ValueError(f"label {int(labels.max())} is outside 0..{self.num_classes - 1}")
        return self.margin_logits(cos_theta, labels)

    def loss_and_accuracy(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean margin-softmax cross entropy and top-1 accuracy (on the margin logits) of a batch."""
        logits = self(embeddings, labels)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return loss, accuracy


def resolve_margins(
    margin: str, m1: float | None = None, m2: float | None = None, m3: float | None = None
) -> tuple[float, float, float]:
    """(m1, m2, m3) for a margin name; given values override the preset's, "combined" starts from ArcFace's.

    For "arcface" only m2 may be changed and for "cosface" only m3: anything else is not that
    loss any more, so it is refused with a hint to use "combined".
    """
    if margin not in (*MARGIN_PRESETS, "combined"):
        raise ValueError(f"unknown margin {margin!r}; choose arcface, cosface or combined")
    base = MARGIN_PRESETS.get(margin, MARGIN_PRESETS["arcface"])
    values = tuple(float(b if v is None else v) for v, b in zip((m1, m2, m3), base))
    if margin != "combined":
        fixed = {"arcface": (0, 2), "cosface": (0, 1)}[margin]
        for i in fixed:
            if values[i] != base[i]:
                raise ValueError(
                    f"margin={margin} fixes m{i + 1}={base[i]} (got {values[i]}); use margin=combined for other combinations"
                )
    return values  # type: ignore[return-value]
