"""The classification heads of face-recognition training: ArcFace, CosFace, the combined margin, partial FC.

The margin math they share is `grafiqs.models.margins`; `build_head` picks a head from the config.
"""
from __future__ import annotations

from grafiqs.models.margins import CombinedMarginHead, resolve_margins
from grafiqs.models.partial_fc import PartialFCHead


class ArcFaceHead(CombinedMarginHead):
    """ArcFace (additive angular margin): s * cos(theta_y + m) for the target class."""

    def __init__(self, num_features: int, num_classes: int, s: float = 64.0, m: float = 0.5, **switches):
        super().__init__(num_features, num_classes, s=s, m1=1.0, m2=m, m3=0.0, **switches)


class CosFaceHead(CombinedMarginHead):
    """CosFace (additive cosine margin): s * (cos(theta_y) - m) for the target class."""

    def __init__(self, num_features: int, num_classes: int, s: float = 64.0, m: float = 0.35, **switches):
        super().__init__(num_features, num_classes, s=s, m1=1.0, m2=0.0, m3=m, **switches)


def build_head(
    margin: str, num_features: int, num_classes: int, s: float = 64.0,
    m1: float | None = None, m2: float | None = None, m3: float | None = None,
    head: str = "full", sample_rate: float = 1.0, margin_grad: str = "exact", fp32: bool = False,
) -> CombinedMarginHead:
    """The head for a margin name ("arcface" | "cosface" | "combined") and optional margin overrides.

    `head="full"`: one [num_classes, num_features] matrix per process. `head="partial_fc"`:
    class centres sharded over the ranks, optionally sampling `sample_rate` of each shard
    (`grafiqs.models.partial_fc.PartialFCHead`).
    """
    m1, m2, m3 = resolve_margins(margin, m1, m2, m3)
    switches = {"margin_grad": margin_grad, "fp32": fp32}
    if head == "partial_fc":
        return PartialFCHead(num_features, num_classes, s=s, m1=m1, m2=m2, m3=m3, sample_rate=sample_rate, **switches)
    if head != "full":
        raise ValueError(f"head must be 'full' or 'partial_fc', got {head!r}")
    if sample_rate != 1.0:
        raise ValueError(f"sample_rate={sample_rate} needs head='partial_fc' (the full head uses every class)")
    if margin == "arcface":
        return ArcFaceHead(num_features, num_classes, s=s, m=m2, **switches)
    if margin == "cosface":
        return CosFaceHead(num_features, num_classes, s=s, m=m3, **switches)
    return CombinedMarginHead(num_features, num_classes, s=s, m1=m1, m2=m2, m3=m3, **switches)
