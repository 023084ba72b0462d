"""Per-sample statistics of the inputs of every BatchNorm2d layer, recorded with forward hooks."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
from torch import nn

# layer name -> (per-sample channel means [B, C], per-sample biased channel variances [B, C])
LayerStatistics = dict[str, tuple[torch.Tensor, torch.Tensor]]


class BNInputStatistics:
    """Records, during a forward pass, each BatchNorm2d input's mean and biased variance over (H, W).

    These are the statistics a BN layer in training mode would compute for a batch
    of one sample; GraFIQs compares them with the layer's running statistics.
    Only `nn.BatchNorm2d` layers take part: the embedding's BatchNorm1d does not.
    """

    def __init__(self, model: nn.Module, persistent: bool = False):
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
        if not self.layers:
            raise ValueError("the model has no BatchNorm2d layer, so GraFIQs has no statistics to compare")
        if all(_never_recorded(m) for m in self.layers.values()):
            warnings.warn(
                "every BatchNorm layer holds its initial running statistics (mean 0, variance 1): the model never "
                "recorded training statistics, so GraFIQs scores of it are meaningless. Load trained weights, or "
                "re-estimate the statistics (train_fr.py's BNRecalibration callback).",
                UntrainedStatisticsWarning,
                stacklevel=3,
            )
        # Persistent hooks stay registered and record only inside `record()`: torch.compile traces
        # them once, where hooks added and removed on every call would force recompilation.
        self._recorded: LayerStatistics = {}
        self._active = False
        self._handles = [
            m.register_forward_pre_hook(partial(self._store_if_active, name)) for name, m in self.layers.items()
        ] if persistent else None

    def _store_if_active(self, name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if self._active:
            _store(self._recorded, name, module, inputs)

    def running(self) -> LayerStatistics:
        """The statistics recorded in training, the reference every sample is compared with."""
        return {name: (m.running_mean, m.running_var) for name, m in self.layers.items()}

    @contextmanager
    def record(self) -> Iterator[LayerStatistics]:
        """Within the block, every forward fills the yielded dict, in forward order."""
        if self._handles is not None:
            self._recorded.clear()
            self._active = True
            try:
                yield self._recorded  # valid until the next record()
            finally:
                self._active = False
            return
        recorded: LayerStatistics = {}
        handles = [m.register_forward_pre_hook(partial(_store, recorded, name)) for name, m in self.layers.items()]
        try:
            yield recorded
        finally:
            for handle in handles:
                handle.remove()


class UntrainedStatisticsWarning(UserWarning):
    """The scored model's BatchNorm statistics were never recorded."""


def _never_recorded(layer: nn.BatchNorm2d) -> bool:
    if layer.running_mean is None or layer.running_var is None:
        return True  # track_running_stats=False: nothing to compare with
    return bool((layer.running_mean == 0).all() and (layer.running_var == 1).all())


def _store(recorded: LayerStatistics, name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    recorded[name] = ChannelMoments.apply(inputs[0])


class ChannelMoments(torch.autograd.Function):
    """Per-sample channel mean and biased variance over (H, W) of [B, C, H, W], with a one-pass backward.

    float32 statistics (float64 of a float64 input) of any input: the loss compares small
    differences. Two passes, as `torch.var_mean(x, dim=(2, 3), correction=0)` computes it (the
    mean, then the summed squares of the centred values), without its slow CPU reduction and its
    five-pass backward; the backward here is one pass: dL/dx = dL/dmean / n + dL/dvar * 2 (x - mean) / n.
    Any memory layout is read as it is (channels_last included: no layout copy).

    A bf16 (autocast) input never becomes a float32 copy: both directions run through ATen's
    batch-norm kernels, which read bf16 and accumulate in float32 (`_reduced_moments`, `_reduced_affine`);
    on CPU that is 8-15x faster than widening, centring and casting back (benchmarks/RESULTS.md).
    float32 keeps the plain ops above, which are also what `torch.func.vmap` runs (the ablation's
    per-sample weight gradients, always float32).
    """

    generate_vmap_rule = True  # the ablation's per-sample weight gradients run it under torch.func.vmap

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = x.shape[2] * x.shape[3]
        if _reduced(x) and count > 1:
            return _reduced_moments(x)
        wide = _widened(x)
        mean = wide.sum(dim=(2, 3)) / count
        # reuse the widened copy for the centred values; never write into the input itself
        centred = wide.sub_(mean[:, :, None, None]) if wide is not x else x - mean[:, :, None, None]
        variance = centred.mul_(centred).sum(dim=(2, 3)) / count
        return mean, variance

    @staticmethod
    def setup_context(ctx, inputs: tuple[torch.Tensor], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        ctx.save_for_backward(inputs[0], output[0])

    @staticmethod
    def backward(ctx, grad_mean: torch.Tensor, grad_variance: torch.Tensor) -> torch.Tensor:
        x, mean = ctx.saved_tensors
        count = x.shape[2] * x.shape[3]
        scale = grad_variance * (2.0 / count)
        offset = grad_mean / count - scale * mean
        if _reduced(x):
            return _reduced_affine(x, scale, offset)
        return torch.addcmul(offset[:, :, None, None], x, scale[:, :, None, None])


def _reduced(x: torch.Tensor) -> bool:
    return x.dtype in (torch.bfloat16, torch.float16)


def _widened(x: torch.Tensor) -> torch.Tensor:
    """x itself if it is float32 or float64, else a float32 copy (a count-1 bf16 input)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _batches_of_one(x: torch.Tensor, *tensors: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """x and `tensors` ([B, C], or shaped and laid out like x) in parts for ATen's batch-norm kernels, which
    work per channel over (batch, H, W): the same as per sample and channel on a batch of one. A contiguous
    [B, C, H, W] is one part, viewed as one sample of B*C channels (no copy); channels_last is one part per
    sample on a CPU, read in its own layout, and one part of a layout copy on a GPU, where a launch per sample
    made channels_last bf16 scoring 20x slower."""
    b, c = x.shape[:2]
    if x.is_contiguous() or x.is_cuda:
        return [tuple(t.contiguous().view(1, b * c, *t.shape[2:]) if t.dim() > 2 else t.view(b * c)
                      for t in (x, *tensors))]
    return list(zip(*(t.split(1) if t.dim() > 2 else t.unbind() for t in (x, *tensors))))


def _reduced_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample channel mean and biased variance, float32 [B, C], of a bf16/fp16 [B, C, H, W].

    ATen's batch-norm statistics kernel reads the reduced type and accumulates in float32, and unlike a
    training-mode batch norm it writes no normalised output (1.6-2.7x faster over iresnet50's BN inputs). Given float32 running buffers it
    returns float32 (the buffers are scratch: their update is not read)."""
    b, c = x.shape[:2]
    scratch = x.new_zeros((2, b, c), dtype=torch.float32)
    parts = [torch.batch_norm_update_stats(part, running_mean, running_var, 1.0)
             for part, running_mean, running_var in _batches_of_one(x, scratch[0], scratch[1])]
    return tuple(torch.cat(values).view(b, c) for values in zip(*parts))


def _reduced_affine(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """x * scale + offset per sample and channel (scale, offset: float32 [B, C]) in x's reduced type, rounded
    once: an eval-mode batch norm with mean 0 and variance 1, written straight into each sample's rows."""
    zeros, ones = scale.new_zeros(scale.shape), scale.new_ones(scale.shape)
    out = torch.empty_like(x, memory_format=torch.contiguous_format if x.is_cuda else torch.preserve_format)
    unused = scale.new_empty(0)
    for part, rows, weight, bias, mean, variance in _batches_of_one(x, out, scale, offset, zeros, ones):
        torch.ops.aten.native_batch_norm.out(part, weight, bias, mean, variance, False, 1.0, 0.0,
                                             out=rows, save_mean=unused, save_invstd=unused)
    return out
