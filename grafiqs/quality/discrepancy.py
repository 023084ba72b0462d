"""The BatchNorm-statistics (BNS) discrepancy that GraFIQs backpropagates."""
from __future__ import annotations

import torch

from grafiqs.quality.bn_stats import LayerStatistics


def bns_loss(sample: LayerStatistics, running: LayerStatistics) -> torch.Tensor:
    """Per-sample BNS loss [B]: mean over BN layers of MSE(mean, running_mean) + MSE(var, running_var).

    MSE is the mean over channels. Samples are independent, so the gradient of the
    sum over a batch with respect to one sample's input is that sample's own gradient.
    """
    total = 0.0
    for name, (mean, variance) in sample.items():
        running_mean, running_var = running[name]
        total = total + (mean - running_mean).square().mean(1) + (variance - running_var).square().mean(1)
    return total / len(sample)
