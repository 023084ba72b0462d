"""GraFIQs ablation engine: many score variants (loss x gradient group x aggregation) per batch.

    scorer = VariantScorer(model, loss_grid(terms=["mean", "var", "mean+var"]),
                           groups=ACTIVATION_GROUPS + ("params:layer3",), aggregations=AGGREGATIONS)
    result = scorer(images)      # normalised [B, 3, 112, 112]
    result.columns["loss=mean+var,dist=mse,layers=all|group=image|agg=l1"]   # == GraFIQsScorer "image"

A column is `f"{loss.name}|group={group}|agg={agg}"` (see `Variant`, `parse_variant`), plus
`f"{loss.name}|bns_loss"`, the loss value itself.

Gradient groups: what the loss is differentiated against, per sample.
    image, block1..block4   activations (official): the input and the four stage outputs. The
                            loss of a batch is a sum of independent per-sample losses, so one
                            `autograd.grad` of the sum gives every sample's own gradient.
    params:stem             conv1, bn1, prelu weights     \\ per-sample gradients of the weights,
    params:layer1..layer4   all parameters of that stage   | which the paper's abstract speaks
    params:fc               fc weight and bias            /  of. Weights are shared by the batch,
                            so these need per-sample autograd: a second, functional pass
                            (`torch.func.vmap` over samples of `vjp` of the loss), chunked.
                            `params:fc` is ALWAYS ZERO for iResNet: the last BatchNorm2d (`bn2`)
                            sits before fc, so no BNS loss depends on fc. It is computed through
                            the same general path (not special-cased) and kept so that an ablation
                            table shows that fact instead of hiding it; it only costs zeros.
                            (bn2's and the embedding BN's own affine parameters act after their
                            inputs are recorded, so they are zero too and belong to no group.)

Aggregations of a group's gradient g (all its tensors together), per sample:
    l1        sum |g|            (official)
    l2        sqrt(sum g^2)
    mean_abs  sum |g| / numel
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, vjp, vmap

from grafiqs.models.iresnet import STAGE_NAMES
from grafiqs.quality.bn_stats import BNInputStatistics
from grafiqs.quality.discrepancy import (
    DISTANCES,
    LAYER_SETS,
    OFFICIAL_LOSS,
    TERMS,
    LossVariant,
    VariantError,
    parse_loss_variant,
)

ACTIVATION_GROUPS = ("image",) + STAGE_NAMES
PARAMETER_GROUPS = ("params:stem", "params:layer1", "params:layer2", "params:layer3", "params:layer4", "params:fc")
GROUPS = ACTIVATION_GROUPS + PARAMETER_GROUPS
AGGREGATIONS = ("l1", "l2", "mean_abs")
# Parameter-name prefixes of each parameter group (the insightface iResNet layout).
PARAMETER_PREFIXES = {
    "params:stem": ("conv1.", "bn1.", "prelu."),
    **{f"params:layer{k}": (f"layer{k}.",) for k in range(1, 5)},
    "params:fc": ("fc.",),
}


def aggregate(gradients: Sequence[torch.Tensor], how: str) -> torch.Tensor:
    """[B] per-sample aggregate of one group's gradients, each [B, ...] (several tensors for weights).

    For one tensor `l1` is `g.abs().flatten(1).sum(1)`, the same operations as GraFIQsScorer.
    """
    if how == "l2":
        total = _reduce_sum(g.float().square().flatten(1).sum(1) for g in gradients)
        return total.sqrt()
    total = _reduce_sum(g.float().abs().flatten(1).sum(1) for g in gradients)
    if how == "l1":
        return total
    if how == "mean_abs":
        return total / sum(g[0].numel() for g in gradients)
    raise VariantError(f"unknown aggregation {how!r}; choose one of {', '.join(AGGREGATIONS)}")


def _reduce_sum(values: Iterable[torch.Tensor]) -> torch.Tensor:
    values = iter(values)
    total = next(values)  # start from the first tensor (not 0) so one tensor is returned unchanged
    for value in values:
        total = total + value
    return total


@dataclass(frozen=True)
class Variant:
    """One score column: a loss variant, a gradient group and an aggregation."""

    loss: LossVariant = OFFICIAL_LOSS
    group: str = "image"
    aggregation: str = "l1"

    def __post_init__(self):
        if self.group not in GROUPS:
            raise VariantError(f"unknown gradient group {self.group!r}; choose one of {', '.join(GROUPS)}")
        if self.aggregation not in AGGREGATIONS:
            raise VariantError(f"unknown aggregation {self.aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")

    @property
    def name(self) -> str:
        return f"{self.loss.name}|group={self.group}|agg={self.aggregation}"


def parse_variant(text: str) -> Variant:
    """`"loss=mean,dist=l1,layers=layer2|group=params:layer3|agg=l2"` -> Variant.

    Sections are separated by `|`; missing keys take the official value, so `"group=block2"`
    is the official loss on block2 with l1. Inverse of `Variant.name`.
    """
    loss_text, fields = "", {}
    for section in filter(None, (s.strip() for s in text.split("|"))):
        key, sep, value = section.partition("=")
        key = key.strip()
        if key in ("group", "agg") and sep:
            if key in fields:
                raise VariantError(f"{key} given twice in {text!r}")
            fields[key] = value.strip()
        elif key in ("loss", "dist", "layers") and sep:
            if loss_text:
                raise VariantError(f"two loss sections in {text!r}; write loss=...,dist=...,layers=... once")
            loss_text = section
        else:
            raise VariantError(f"bad variant section {section!r} in {text!r}; expected loss=...|group=...|agg=...")
    return Variant(parse_loss_variant(loss_text), fields.get("group", "image"), fields.get("agg", "l1"))


def loss_grid(
    terms: Iterable[str] = TERMS, distances: Iterable[str] = DISTANCES, layers: Iterable[str] = LAYER_SETS
) -> list[LossVariant]:
    """Every valid LossVariant of the given axis values; `kl` pairs with `mean+var` only."""
    grid = []
    for term, distance, layer in itertools.product(terms, distances, layers):
        if distance == "kl" and term != "mean+var":
            continue
        grid.append(LossVariant(term, distance, layer))
    return grid


def variant_grid(
    losses: Iterable[LossVariant], groups: Iterable[str] = ACTIVATION_GROUPS, aggregations: Iterable[str] = ("l1",)
) -> list[Variant]:
    """The full cross product as Variants (the columns `VariantScorer` produces, in its order)."""
    return [Variant(l, g, a) for l, g, a in itertools.product(losses, groups, aggregations)]


@dataclass
class VariantScores:
    columns: dict[str, torch.Tensor]  # column name -> [B]
    embedding: torch.Tensor  # [B, D] from the single batched forward
    seconds: dict[str, float] = field(default_factory=dict)  # time of the activation / parameter passes


class VariantScorer:
    """Computes every (loss variant x group x aggregation) column of a batch.

    Activation groups: ONE batched forward with BN pre-hooks records the statistics every
    loss variant needs; then one `autograd.grad` per loss variant (graph retained except for
    the last). Parameter groups: one extra functional forward, vmapped over samples in chunks
    of `param_chunk_size`, with one vjp per loss variant; per-sample gradients are reduced to
    their aggregates inside the vmapped function, so only a chunk's gradients live at once
    (memory ~ chunk x parameters of the requested groups). A gradient that does not depend on
    the loss (e.g. block4 under layers=stem) is exactly zero, not an error.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_variants: Iterable[LossVariant] = (OFFICIAL_LOSS,),
        groups: Iterable[str] = ACTIVATION_GROUPS,
        aggregations: Iterable[str] = ("l1",),
        param_chunk_size: int | None = 4,
        parameter_losses: Iterable[LossVariant] | None = None,
    ):
        self.loss_variants = tuple(dict.fromkeys(loss_variants))
        # The per-sample weight pass costs about a per-image loop per loss: a grid may restrict it.
        self.parameter_losses = self.loss_variants if parameter_losses is None else tuple(dict.fromkeys(parameter_losses))
        self.all_losses = tuple(dict.fromkeys(self.loss_variants + self.parameter_losses))  # activation losses first
        self.groups = tuple(dict.fromkeys(groups))
        self.aggregations = tuple(dict.fromkeys(aggregations))
        if not self.loss_variants:
            raise VariantError("give at least one loss variant")
        for group, aggregation in itertools.product(self.groups, self.aggregations):
            Variant(OFFICIAL_LOSS, group, aggregation)  # validates both names
        self.model = model.eval().requires_grad_(False)  # no weight-gradient work in the activation pass
        self.statistics = BNInputStatistics(model)
        for loss in self.loss_variants + self.parameter_losses:
            loss.select(self.statistics.layers)  # fail now, not mid-batch, on a layer set the model lacks
        self.activation_groups = [g for g in self.groups if g in ACTIVATION_GROUPS]
        self.parameter_groups = [g for g in self.groups if g in PARAMETER_GROUPS]
        self.param_chunk_size = param_chunk_size
        parameters = dict(model.named_parameters())
        self.group_parameters = {}
        for group in self.parameter_groups:
            names = [n for n in parameters if n.startswith(PARAMETER_PREFIXES[group])]
            if not names:
                raise VariantError(f"{group} matches no parameter of this model")
            self.group_parameters[group] = names

    @cached_property
    def columns(self) -> list[str]:
        names = []
        for loss in self.all_losses:
            groups = (self.activation_groups if loss in self.loss_variants else []) + (
                self.parameter_groups if loss in self.parameter_losses else [])
            names += [f"{loss.name}|bns_loss", *(v.name for v in variant_grid([loss], groups, self.aggregations))]
        return names

    def __call__(self, images: torch.Tensor) -> VariantScores:
        start = time.perf_counter()
        columns, embedding = self._activation_pass(images)
        seconds = {"activation_pass": time.perf_counter() - start}
        if self.parameter_groups:
            start = time.perf_counter()
            columns.update(self._parameter_pass(images))
            seconds["parameter_pass"] = time.perf_counter() - start
        return VariantScores({name: columns[name] for name in self.columns}, embedding, seconds)

    def _activation_pass(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        columns = {}
        with torch.enable_grad():
            images = images.detach().requires_grad_(bool(self.activation_groups))
            with self.statistics.record() as sample_statistics:
                embedding, stage_outputs = self.model.forward_stages(images)
            running = self.statistics.running()
            differentiated = {"image": images, **stage_outputs}
            inputs = [differentiated[g] for g in self.activation_groups]
            for index, loss_variant in enumerate(self.all_losses):
                loss = loss_variant(sample_statistics, running)
                columns[f"{loss_variant.name}|bns_loss"] = loss.detach()
                if not inputs or loss_variant not in self.loss_variants:
                    continue
                last = index == len(self.loss_variants) - 1
                gradients = torch.autograd.grad(loss.sum(), inputs, retain_graph=not last, materialize_grads=True)
                for group, gradient in zip(self.activation_groups, gradients):
                    for aggregation in self.aggregations:
                        columns[Variant(loss_variant, group, aggregation).name] = aggregate([gradient], aggregation)
        return columns, embedding.detach()

    def _parameter_pass(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample weight gradients: vmap over samples of one functional forward + a vjp per loss."""
        parameters = dict(self.model.named_parameters())
        differentiated = {n: parameters[n].detach() for g in self.parameter_groups for n in self.group_parameters[g]}
        losses, groups, aggregations = self.parameter_losses, self.parameter_groups, self.aggregations

        def sample_losses(weights: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
            # eval-mode BN inside vmap reads the module's own running buffers (not passed, not batched)
            with self.statistics.record() as statistics:
                functional_call(self.model, weights, (image.unsqueeze(0),), strict=False)
            running = self.statistics.running()
            return torch.cat([loss(statistics, running) for loss in losses])  # [K]

        basis = torch.eye(len(losses), device=images.device)  # cotangent k selects loss k

        def per_sample(image: torch.Tensor) -> torch.Tensor:
            _, pullback = vjp(lambda w: sample_losses(w, image), differentiated)
            values = []
            for k in range(len(losses)):
                (gradients,) = pullback(basis[k])
                for group in groups:
                    group_gradients = [gradients[n].unsqueeze(0) for n in self.group_parameters[group]]
                    values += [aggregate(group_gradients, a)[0] for a in aggregations]
            return torch.stack(values)  # [K * G * A]

        with torch.enable_grad():
            values = vmap(per_sample, chunk_size=self.param_chunk_size)(images.detach())
        names = [Variant(l, g, a).name for l, g, a in itertools.product(losses, groups, aggregations)]
        return {name: values[:, i] for i, name in enumerate(names)}
