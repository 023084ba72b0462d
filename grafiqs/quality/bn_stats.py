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
    differences. A bf16 (autocast) input is widened once, and that float copy becomes the centred
    values in place and is freed after the forward: the backward keeps only the bf16 input. Any
    memory layout is read as it is (channels_last included: no layout copy). Two passes, as
    `torch.var_mean(x, dim=(2, 3), correction=0)` computes it (the mean, then the summed squares of
    the centred values), without its slow CPU reduction and its five-pass backward; the backward
    here is one pass: dL/dx = dL/dmean / n + dL/dvar * 2 (x - mean) / n.
    """

    generate_vmap_rule = True  # the ablation's per-sample weight gradients run it under torch.func.vmap

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = x.shape[2] * x.shape[3]
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
        return torch.addcmul(offset[:, :, None, None], _widened(x), scale[:, :, None, None]).to(x.dtype)


def _widened(x: torch.Tensor) -> torch.Tensor:
    """x itself if it is float32 or float64, else a float32 copy (mixed-dtype elementwise ops are slower on CPU)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
