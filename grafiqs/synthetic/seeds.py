"""The keys of every random stream of the synthetic faces.

Every draw is a pure function of its keys, through numpy Generators seeded from fixed-length
SeedSequence keys, so the same image comes out in any process or DataLoader worker. The tags
below are put first in every SeedSequence key; they live in one place so that a new stream
gets a tag of its own here.
"""
from __future__ import annotations

import numpy as np

# Keys put first in every SeedSequence, so the random streams never collide.
_TAG_IDENTITY, _TAG_NUISANCE, _TAG_DEGRADE, _TAG_PAIRS, _TAG_WIDE = 0x1D, 0x2E, 0x3F, 0x4A, 0x5B


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _check_key(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
