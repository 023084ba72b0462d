"""The contact sheet of a scoring run: its best and worst crops, each above where GraFIQs wants it changed.

Row pairs: the crop as the model saw it (colour order restored for display), then the magnitude of the input
gradient |dL/dx| (summed over the colour channels) laid over the crop in gray. The gradient maps of one sheet
share one colour scale, so the worst images' larger required change is visible as more colour.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def gradient_maps(gradients) -> np.ndarray:
    """[B, 3, H, W] input gradients -> [B, H, W] magnitudes |dL/dx| summed over the channels (float32)."""
    return np.abs(np.asarray(gradients, np.float32)).sum(axis=1)


def gradient_overlay(crop: np.ndarray, magnitude: np.ndarray, scale: float) -> bytes:
    """PNG bytes of one image beside its gradient map, as on the contact sheet: the RGB uint8 crop, then |dL/dx|
    (divided by `scale`, clipped to 1) in inferno over the crop in gray."""
    import cv2

    gray = np.repeat(crop.mean(axis=2, keepdims=True), 3, axis=2)
    heat = cv2.applyColorMap((np.clip(magnitude / max(scale, 1e-30), 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    overlay = (0.35 * gray + 0.65 * heat[..., ::-1]).round().astype(np.uint8)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(np.hstack([crop, overlay])[..., ::-1]))
    if not ok:
        raise RuntimeError("cv2 could not encode a gradient map as PNG")
    return png.tobytes()


def write_contact_sheet(path: Path, rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[np.ndarray],
                                                         Sequence[str]]], title: str = "") -> Path:
    """rows: (row title, RGB uint8 HxWx3 crops, HxW gradient magnitudes, one label per crop); a PNG at `path`,
    written atomically (recorded in the folder's ledger)."""
    from matplotlib.figure import Figure  # no pyplot: headless, and a notebook's backend is left alone

    from grafiqs.io.atomic import atomic_write_with

    columns = max(len(crops) for _, crops, _, _ in rows)
    scale = max(float(np.percentile(np.concatenate([m.ravel() for _, _, maps, _ in rows for m in maps]), 99.5)), 1e-30)
    figure = Figure(figsize=(1.45 * columns, 3.2 * len(rows) + 0.4), dpi=110)
    axes = figure.subplots(2 * len(rows), columns, squeeze=False)
    for number, (name, crops, maps, labels) in enumerate(rows):
        for column in range(columns):
            top, bottom = axes[2 * number, column], axes[2 * number + 1, column]
            for axis in (top, bottom):
                axis.set_axis_off()
            if column >= len(crops):
                continue
            top.imshow(crops[column])
            top.set_title(labels[column], fontsize=7)
            bottom.imshow(crops[column].mean(axis=2), cmap="gray", vmin=0, vmax=255)
            bottom.imshow(np.clip(maps[column] / scale, 0, 1), cmap="inferno", vmin=0, vmax=1, alpha=0.65)
        axes[2 * number, 0].text(-0.1, 0.5, name, transform=axes[2 * number, 0].transAxes, rotation=90,
                                 ha="right", va="center", fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    atomic_write_with(path, lambda file: figure.savefig(file, format="png"))
    return path
