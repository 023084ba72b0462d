"""Counter-hash weights: a full iResNet state dict rebuilt anywhere from a formula.

The golden GraFIQs scores in `tests/data/golden` were computed by the authors' code
with these weights (rule in shared/reference/README.md), so tests and the demo can
check exactness without shipping hundreds of MB. Only the BatchNorm running
statistics are data (`bn_stats.npz`).
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import torch

_MASK = (1 << 64) - 1


def hashed_uniform(key: str, count: int) -> np.ndarray:
    """`count` floats in [0, 1): splitmix64 of the counters (crc32(key) << 32) + i."""
    with np.errstate(over="ignore"):
        z = np.uint64(zlib.crc32(key.encode()) << 32) + np.arange(count, dtype=np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def hashed_parameter(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The value the golden rule gives the parameter `key` of `shape`."""
    signed = 2.0 * hashed_uniform(key, math.prod(shape)) - 1.0
    leaf = key.rsplit(".", 1)[-1]
    if key.startswith("features."):
        values = np.ones_like(signed) if leaf == "weight" else 0.1 * signed
    elif leaf == "weight" and len(shape) == 4:  # convolution, He-uniform on fan-in
        values = math.sqrt(6.0 / math.prod(shape[1:])) * signed
    elif key.startswith("fc."):
        values = math.sqrt(6.0 / shape[1]) * signed if leaf == "weight" else 0.01 * signed
    elif "prelu" in key:
        values = 0.25 + 0.05 * signed
    elif leaf == "weight":  # BatchNorm scale
        values = 1.0 + 0.1 * signed
    elif leaf == "bias":  # BatchNorm shift
        values = 0.1 * signed
    else:
        raise KeyError(f"no hashed-weight rule for {key}")
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def hashed_state_dict(model: torch.nn.Module, bn_stats: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Every parameter of `model` by the rule; running statistics from `bn_stats` (an .npz by key)."""
    state = {}
    running = dict(np.load(bn_stats)) if bn_stats is not None else {}
    for key, tensor in model.state_dict().items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            state[key] = torch.from_numpy(running[key]).to(tensor.dtype) if key in running else tensor.clone()
        else:
            state[key] = hashed_parameter(key, tuple(tensor.shape))
    return state
