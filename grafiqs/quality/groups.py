"""The GraFIQs scoring engine: score variants (loss x gradient group x aggregation) of a batch.

    scorer = VariantScorer(model, loss_grid(terms=["mean", "var", "mean+var"]),
                           groups=ACTIVATION_GROUPS + ("params:layer3",), aggregations=AGGREGATIONS)
    result = scorer(images)      # normalised [B, 3, 112, 112]
    result.columns["loss=mean+var,dist=mse,layers=all|group=image|agg=l1"]   # == GraFIQsScorer "image"

The official score (`GraFIQsScorer`, score.py) is this engine with the official loss, the
activation groups and `l1`; ablations and benchmarks get the same speed options (bf16,
compile, channels_last) and the same per-sample status.

A column is `f"{loss.name}|group={group}|agg={agg}"` (see `Variant`, `parse_variant`), plus
`loss_column(loss)` = `f"{loss.name}|bns_loss"`, the loss value itself.

Gradient groups: what the loss is differentiated against, per sample.
    image, block1..block4   activations (official): the input and the four stage outputs. The
                            loss of a batch is a sum of independent per-sample losses, so one
                            `autograd.grad` of the sum gives every sample's own gradient. Only
                            the requested ones are computed: the autograd graph starts at the
                            earliest requested tensor, so block4 alone skips the backward
                            through the stem and layer1..layer4.
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable, Sequence

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
PRECISIONS = ("32", "bf16")
# Why a sample has no score (scores.csv `status`); checked in this order, the first that applies wins.
STATUS_OK, STATUS_INPUT, STATUS_LOSS, STATUS_GRADIENT = 0, 1, 2, 3
STATUS_MESSAGES = {
    STATUS_OK: "ok",
    STATUS_INPUT: "nan: the input image holds NaN/Inf values",
    STATUS_LOSS: "nan: the BNS loss is not finite (NaN/Inf activations; check the weights)",
    STATUS_GRADIENT: "nan: a gradient is not finite (overflow; try --precision 32)",
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


def loss_column(loss: LossVariant) -> str:
    """Name of the column that holds the loss value itself."""
    return f"{loss.name}|bns_loss"


def numeric_status(
    images: torch.Tensor, losses: Iterable[torch.Tensor], scores: Iterable[torch.Tensor]
) -> torch.Tensor:
    """Per-sample status code: why (if at all) the sample's scores cannot be trusted."""
    losses, scores = list(losses), list(scores)
    status = torch.full_like(losses[0], STATUS_GRADIENT, dtype=torch.int64)
    status[torch.stack([torch.isfinite(v) for v in scores]).all(0)] = STATUS_OK
    status[~torch.stack([torch.isfinite(v) for v in losses]).all(0)] = STATUS_LOSS
    status[~torch.isfinite(images.flatten(1)).all(1)] = STATUS_INPUT
    return status


# Measured by benchmarks/gpu_check.py on an H200 (torch 2.11): eager bf16 stays within 3% of the float32 loop there.
COMPILED_BF16_ON_GPU = ("compiled bf16 stages give wrong scores on a CUDA GPU (image to block3 58% off the float32 "
                        "loop on an H200, benchmarks/RESULTS.md); run bf16 with --compile off")


@contextmanager
def ieee_float32_convolutions():
    """cuDNN runs float32 convolutions in TF32 (a 10-bit mantissa) by default on Ampere and newer GPUs, which
    moves scores by more than 1e-3: the scorer's float32 is IEEE float32 on every device (no-op on a CPU)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def _output_as_leaf(stage: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """`stage` whose output starts the autograd graph: nothing before it is recorded for the backward."""
    return lambda x: stage(x).detach().requires_grad_(True)


@dataclass
class VariantScores:
    columns: dict[str, torch.Tensor]  # column name -> [B]; a sample whose status is not ok has NaN gradient columns
    embedding: torch.Tensor  # [B, D] float32, from the single batched forward
    status: torch.Tensor  # [B] int codes, see STATUS_MESSAGES: 0 ok, else why its gradient columns are NaN
    # f"{loss.name}|group={group}" -> dL/d(group) of the activation groups, with keep_gradients=True
    gradients: dict[str, torch.Tensor] | None = None


class VariantScorer:
    """Computes every (loss variant x group x aggregation) column of a batch, and each sample's status.

    Activation groups: ONE batched forward with BN pre-hooks records the statistics every
    loss variant needs; then one `autograd.grad` per loss variant (graph retained except for
    the last). Parameter groups: one extra functional forward, vmapped over samples in chunks
    of `param_chunk_size`, with one vjp per loss variant; per-sample gradients are reduced to
    their aggregates inside the vmapped function, so only a chunk's gradients live at once
    (memory ~ chunk x parameters of the requested groups). A gradient that does not depend on
    the loss (e.g. block4 under layers=stem) is exactly zero, not an error.

    `precision="32"` is exact (the default). `precision="bf16"` runs the convolutions of the
    activation pass under bfloat16 autocast, an opt-in approximation whose rank fidelity is
    measured in benchmarks/RESULTS.md; the statistics and the losses stay in float32 either way.
    The parameter pass always runs in float32 (batch_norm under vmap rejects bf16 inputs).
    `channels_last` changes only the memory layout, not the numbers. `compile=True` runs the
    four stages of the activation pass through `torch.compile` (fused elementwise work, same
    float32 math up to rounding: within 1e-4 relative of the eager scores); the first batch pays
    the compilation (about 85 s for iresnet50 on 2 cores, ~20 s once inductor's cache holds it),
    and a batch smaller than the largest so far is zero-padded to it, so nothing recompiles.
    `compile="auto"` starts eager and lets the caller switch per batch with `use_compiled`
    (score.py's `CompileChoice` does, from measured speeds); the stages compile on first use.
    A sample with a non-finite input, loss or gradient gets NaN in every gradient column and a
    status code saying why (never a silent number).
    On Linux CPUs, `grafiqs.allocator.retain_freed_memory()` (which score.py calls) makes
    batches 1.1-1.2x faster.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_variants: Iterable[LossVariant] = (OFFICIAL_LOSS,),
        groups: Iterable[str] = ACTIVATION_GROUPS,
        aggregations: Iterable[str] = ("l1",),
        param_chunk_size: int | None = 4,
        parameter_losses: Iterable[LossVariant] | None = None,
        *,
        precision: str = "32",
        channels_last: bool = False,
        compile: bool | str = False,
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
        if precision not in PRECISIONS:
            raise VariantError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = precision
        self.model = model.eval().requires_grad_(False)  # no weight-gradient work in the activation pass
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        if compile not in (False, True, "auto"):
            raise VariantError(f"compile must be False, True or 'auto', not {compile!r}")
        self.statistics = BNInputStatistics(model, persistent=compile is not False)
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
        self.use_compiled = compile is True
        # compiled stages: a batch smaller than the largest one so far is zero-padded to it, so nothing recompiles
        self.compiled_batch = 0
        # Record the graph only from the earliest requested tensor on: autograd then has nothing earlier to go through.
        first = min((ACTIVATION_GROUPS.index(g) for g in self.activation_groups), default=len(ACTIVATION_GROUPS))
        self.image_requires_grad = first == 0
        self._leaf_stage = first - 1 if 0 < first < len(ACTIVATION_GROUPS) else None

    @cached_property
    def eager_stages(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return self._starting_graph_at_first_group(list(self.model.stages()))

    @cached_property
    def compiled_stages(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        # torch.compile of each stage fuses the BN, PReLU and statistics passes with their backward; the
        # stage boundaries stay autograd edges, so their outputs can still be differentiated.
        return self._starting_graph_at_first_group([torch.compile(s, dynamic=False) for s in self.model.stages()])

    def _starting_graph_at_first_group(self, stages: list) -> list:
        if self._leaf_stage is not None:
            stages[self._leaf_stage] = _output_as_leaf(stages[self._leaf_stage])
        return stages

    @cached_property
    def columns(self) -> list[str]:
        names = []
        for loss in self.all_losses:
            groups = (self.activation_groups if loss in self.loss_variants else []) + (
                self.parameter_groups if loss in self.parameter_losses else [])
            names += [loss_column(loss), *(v.name for v in variant_grid([loss], groups, self.aggregations))]
        return names

    def __call__(self, images: torch.Tensor, keep_gradients: bool = False) -> VariantScores:
        """Columns of normalised images [B, 3, H, W]; `keep_gradients` also returns the activation gradients."""
        with ieee_float32_convolutions():
            columns, embedding, gradients = self._activation_pass(images, keep_gradients)
            if self.parameter_groups:
                columns.update(self._parameter_pass(images))
        losses = {loss_column(loss) for loss in self.all_losses}
        scores = [name for name in self.columns if name not in losses]
        status = numeric_status(images.detach(), [columns[n] for n in losses], [columns[n] for n in scores])
        invalid = status != STATUS_OK
        if invalid.any():  # every gradient column of such a sample becomes NaN; its loss values stay as they are
            columns.update({n: columns[n].masked_fill(invalid, float("nan")) for n in scores})
        return VariantScores({name: columns[name] for name in self.columns}, embedding, status,
                             gradients if keep_gradients else None)

    def _autocast(self, device: torch.device):
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        """Zero images up to the compiled batch size; samples are independent in eval mode, so
        padding changes no real sample's numbers."""
        if not self.use_compiled:
            return images
        self.compiled_batch = max(self.compiled_batch, images.shape[0])
        missing = self.compiled_batch - images.shape[0]
        return torch.cat([images, images.new_zeros((missing, *images.shape[1:]))]) if missing else images

    def _activation_pass(
        self, images: torch.Tensor, keep_gradients: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        if self.use_compiled and self.precision == "bf16" and images.is_cuda:
            raise VariantError(COMPILED_BF16_ON_GPU)
        count = images.shape[0]
        columns, kept = {}, {}
        with torch.enable_grad():
            images = self._pad(images.detach()).contiguous(memory_format=self.memory_format)
            images.requires_grad_(self.image_requires_grad)
            with self.statistics.record() as sample_statistics, self._autocast(images.device):
                embedding, stage_outputs = self.model.forward_stages(
                    images, self.compiled_stages if self.use_compiled else self.eager_stages)
            running = self.statistics.running()
            differentiated = {"image": images, **stage_outputs}
            inputs = [differentiated[g] for g in self.activation_groups]
            for index, loss_variant in enumerate(self.all_losses):
                loss = loss_variant(sample_statistics, running)
                columns[loss_column(loss_variant)] = loss.detach()[:count]
                if not inputs or loss_variant not in self.loss_variants:
                    continue
                if loss.requires_grad:
                    last = index == len(self.loss_variants) - 1
                    gradients = torch.autograd.grad(loss.sum(), inputs, retain_graph=not last, materialize_grads=True)
                else:  # the loss reads only layers before the earliest requested group (e.g. layers=stem, block4)
                    gradients = [torch.zeros_like(tensor) for tensor in inputs]
                for group, gradient in zip(self.activation_groups, gradients):
                    gradient = gradient[:count]
                    if keep_gradients:
                        kept[f"{loss_variant.name}|group={group}"] = gradient
                    for aggregation in self.aggregations:
                        columns[Variant(loss_variant, group, aggregation).name] = aggregate([gradient], aggregation)
        return columns, embedding.detach()[:count].float(), kept

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
