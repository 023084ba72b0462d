"""112x112 images that are not aligned faces, for measuring the face check (benchmarks/bench_face_check.py, tests).

Each is a uint8 112x112x3 BGR array, drawn from a seed: a blank image, noise, a drawn car, a photo (any
HxWx3 image) resized to the crop as score.py resizes an unaligned input.
"""
from __future__ import annotations

import cv2
import numpy as np

SIZE = 112


def blank(seed: int) -> np.ndarray:
    """One flat colour (seed 0: black, 1: mid gray, 2: white, then random colours)."""
    colour = {0: (0, 0, 0), 1: (128, 128, 128), 2: (255, 255, 255)}.get(seed)
    if colour is None:
        colour = tuple(int(c) for c in np.random.default_rng(seed).integers(0, 256, 3))
    return np.full((SIZE, SIZE, 3), colour, np.uint8)


def noise(seed: int) -> np.ndarray:
    """Uniform pixel noise (seed % 3 == 0), Gaussian noise around mid gray (1), or smooth colour blobs (2)."""
    rng = np.random.default_rng(seed)
    if seed % 3 == 0:
        return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    if seed % 3 == 1:
        return np.clip(128 + rng.normal(0, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)


def drawn_car(seed: int) -> np.ndarray:
    """A car seen from the side: sky and road, a body and cabin of a random colour, two windows, two wheels and lights;
    sizes and places vary with the seed."""
    rng = np.random.default_rng(seed)
    image = np.empty((SIZE, SIZE, 3), np.uint8)
    horizon = int(rng.integers(45, 75))
    image[:horizon], image[horizon:] = rng.integers(100, 250, 3), rng.integers(30, 140, 3)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    left, right, top = int(rng.integers(4, 20)), int(rng.integers(92, 108)), int(rng.integers(40, 60))
    bottom = top + int(rng.integers(20, 32))
    cv2.rectangle(image, (left, top), (right, bottom), colour, -1)
    cabin = int(rng.integers(left + 10, left + 30)), int(rng.integers(right - 35, right - 10))
    cv2.rectangle(image, (cabin[0], top - int(rng.integers(12, 22))), (cabin[1], top), colour, -1)
    middle = (cabin[0] + cabin[1]) // 2
    glass = (210, 225, 235)
    cv2.rectangle(image, (cabin[0] + 4, top - 14), (middle - 2, top - 2), glass, -1)
    cv2.rectangle(image, (middle + 2, top - 14), (cabin[1] - 4, top - 2), glass, -1)
    radius = int(rng.integers(8, 13))
    for x in (left + radius + 6, right - radius - 6):
        cv2.circle(image, (x, bottom), radius, (20, 20, 20), -1)
        cv2.circle(image, (x, bottom), radius // 2, (160, 160, 160), -1)
    cv2.circle(image, (right - 3, top + 6), 3, (0, 230, 255), -1)
    cv2.circle(image, (left + 3, top + 6), 3, (0, 0, 200), -1)
    return image


def resized_photo(photo: np.ndarray) -> np.ndarray:
    """A whole photo squeezed to 112x112 as score.py resizes an input that is not 112x112 (what scoring an unaligned
    photo without --align amounts to)."""
    from grafiqs.data.decode import to_model_tensor

    return to_model_tensor(photo, SIZE).permute(1, 2, 0).numpy()
