"""The BatchNorm-statistics (BNS) discrepancy that GraFIQs backpropagates, and its ablation variants.

The official loss (`bns_loss`) is one point of a small grid (`LossVariant`):

    terms     which statistics are compared: `mean`, `var` or `mean+var` (official);
    distance  how a per-channel statistic is compared with the running one, then averaged
              over channels:
                mse  (s - r)^2                                             (official)
                l1   |s - r|
                kl   KL( N(m, v) || N(rm, rv) )
                       = 1/2 [ log(rv/v) + (v + (m - rm)^2) / rv - 1 ],  v, rv += KL_EPS
              KL compares the whole Gaussian, mean and variance together, so its only
              `terms` is `mean+var`;
    layers    which BatchNorm2d inputs take part: `all` (official: every BN2d, including the
              final `bn2` after layer4, which belongs to no stage), `stem` (the top-level
              `bn1`) or `layer1`..`layer4` (the BN2d layers named `layerK.*`, downsample
              BNs included).

Per sample:  loss = mean over the included layers of the sum over the included terms of
(distance averaged over channels). The default variant IS `bns_loss`: both run through
`variant_loss`, so the official numbers stay bit-for-bit those of tests/test_golden.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from grafiqs.errors import InputError
from grafiqs.quality.bn_stats import LayerStatistics

TERMS = ("mean+var", "mean", "var")
DISTANCES = ("mse", "l1", "kl")
LAYER_SETS = ("all", "stem", "layer1", "layer2", "layer3", "layer4")
# Floor added to both variances in the KL: a channel that is constant over (H, W) has
# variance 0, where log and 1/v blow up. 1e-5 is the eps of the iResNet BN layers.
KL_EPS = 1e-5


class VariantError(InputError, ValueError):
    """An unknown or inconsistent ablation axis value (catchable as InputError or ValueError)."""


def _check(axis: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise VariantError(f"unknown {axis} {value!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class LossVariant:
    """One BNS-loss variant; `LossVariant()` is the official GraFIQs loss."""

    terms: str = "mean+var"
    distance: str = "mse"
    layers: str = "all"

    def __post_init__(self):
        _check("loss terms", self.terms, TERMS)
        _check("distance", self.distance, DISTANCES)
        _check("layers", self.layers, LAYER_SETS)
        if self.distance == "kl" and self.terms != "mean+var":
            raise VariantError(
                f"dist=kl compares mean and variance together; use loss=mean+var, not loss={self.terms}"
            )

    @property
    def name(self) -> str:
        return f"loss={self.terms},dist={self.distance},layers={self.layers}"

    def select(self, layer_names) -> list[str]:
        """The included BN2d layer names, in the given (forward) order."""
        names = list(layer_names)
        if self.layers == "all":
            chosen = names
        elif self.layers == "stem":
            chosen = [n for n in names if n == "bn1"]
        else:
            chosen = [n for n in names if n.startswith(self.layers + ".")]
        if not chosen:
            raise VariantError(f"layers={self.layers} matches no BatchNorm2d layer of this model")
        return chosen

    def __call__(self, sample: LayerStatistics, running: LayerStatistics) -> torch.Tensor:
        return variant_loss(sample, running, self)


OFFICIAL_LOSS = LossVariant()


def parse_loss_variant(text: str) -> LossVariant:
    """`"loss=mean,dist=l1,layers=layer2"` -> LossVariant; missing keys take the official value."""
    keys = {"loss": "terms", "dist": "distance", "layers": "layers"}
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in keys:
            raise VariantError(f"bad loss-variant item {part!r} in {text!r}; expected loss=..., dist=..., layers=...")
        if keys[key.strip()] in fields:
            raise VariantError(f"{key.strip()} given twice in {text!r}")
        fields[keys[key.strip()]] = value.strip()
    return LossVariant(**fields)


def _distance(sample: torch.Tensor, reference: torch.Tensor, distance: str) -> torch.Tensor:
    """[B, C] sample statistic vs [C] running statistic -> [B], averaged over channels."""
    if distance == "mse":
        return (sample - reference).square().mean(1)
    return (sample - reference).abs().mean(1)  # l1


def _gaussian_kl(mean, var, running_mean, running_var) -> torch.Tensor:
    """[B] mean over channels of KL(N(mean, var) || N(running_mean, running_var))."""
    var = var + KL_EPS
    running_var = running_var + KL_EPS
    kl = 0.5 * (torch.log(running_var) - torch.log(var) + (var + (mean - running_mean).square()) / running_var - 1)
    return kl.mean(1)


def variant_loss(
    sample: LayerStatistics, running: LayerStatistics, variant: LossVariant = OFFICIAL_LOSS
) -> torch.Tensor:
    """Per-sample loss [B] of `variant` from recorded statistics (see the module docstring).

    Terms are added one at a time in the order (mean, var), layers in forward order, so the
    official variant performs exactly the float operations GraFIQs always did.
    """
    included = variant.select(sample)
    total = 0.0
    for name in included:
        mean, variance = sample[name]
        running_mean, running_var = running[name]
        if variant.distance == "kl":
            total = total + _gaussian_kl(mean, variance, running_mean, running_var)
            continue
        if variant.terms in ("mean+var", "mean"):
            total = total + _distance(mean, running_mean, variant.distance)
        if variant.terms in ("mean+var", "var"):
            total = total + _distance(variance, running_var, variant.distance)
    return total / len(included)


def bns_loss(sample: LayerStatistics, running: LayerStatistics) -> torch.Tensor:
    """Per-sample BNS loss [B]: mean over BN layers of MSE(mean, running_mean) + MSE(var, running_var).

    MSE is the mean over channels. Samples are independent, so the gradient of the
    sum over a batch with respect to one sample's input is that sample's own gradient.
    """
    return variant_loss(sample, running, OFFICIAL_LOSS)
