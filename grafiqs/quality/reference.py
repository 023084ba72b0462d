"""The official GraFIQs algorithm written the authors' way: one image at a time, BN forward hooks.

This is the project's test oracle and the benchmark baseline. It shares nothing with
`scorer.py` but the model: statistics with `torch.mean`/`torch.var` over (batch, H, W)
of a batch of one, `F.mse_loss`, and `autograd.grad` into the image and the stage outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grafiqs.models.iresnet import STAGE_NAMES


def reference_scores(model: nn.Module, image: torch.Tensor) -> dict[str, float]:
    """GraFIQs of ONE normalised image [1, 3, H, W]: {'image', 'block1'..'block4', 'bns_loss'}."""
    assert image.shape[0] == 1, "the reference scores one image at a time"
    layer_losses = []

    def hook(module, inputs, output):
        x = inputs[0]
        mean = torch.mean(x, dim=[0, 2, 3])
        var = torch.var(x, dim=[0, 2, 3], unbiased=False)
        layer_losses.append(F.mse_loss(mean, module.running_mean) + F.mse_loss(var, module.running_var))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.enable_grad():
            image = image.detach().clone().requires_grad_(True)
            _, stages = model.forward_stages(image)
            loss = torch.stack(layer_losses).mean()
            grads = torch.autograd.grad(loss, [image] + [stages[name] for name in STAGE_NAMES])
    finally:
        for handle in handles:
            handle.remove()
    scores = {name: g.abs().sum().item() for name, g in zip(("image",) + STAGE_NAMES, grads)}
    scores["bns_loss"] = loss.item()
    return scores
