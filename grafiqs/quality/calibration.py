"""The 0-100 quality scalar: an OFIQ-style sigmoid of the log10 GraFIQs magnitude, fitted per model and group.

OFIQ (the ISO/IEC 29794-5 reference implementation) maps each native measure x to an integer 0-100 with a
fixed sigmoid, Q = round(h * (a + s * sigmoid((x - x0) / w))) clamped to [0, 100], and -1 where the measure
cannot be assessed. Here x = log10(magnitude) and h = 100, a = 1, s = -1, w > 0: Q = 100 * (1 - sigmoid(...)),
strictly decreasing in the magnitude (a larger required change is a lower quality) before rounding.

`fit_mapping` places a reference set of good images (clean, aligned faces the model recognises) at the
middle: its median log magnitude x0 -> 50, and w = (p95 - p5) / (2 ln 9), so that the 5th and 95th
magnitude percentiles land near 90 and 10 (exactly, for a reference distribution symmetric in log10). The
scalar is therefore relative to that reference: 50 is a typical reference image, not an absolute grade.

The parameters are stored with the model in a small JSON file (`calibration_path_for(weights)`:
`<weights>.calibration.json`), bound to the weights by their SHA-256 and to the colour order fed to them;
`read_calibration` refuses a file for other weights. Rounding to integers makes ties: images whose
magnitudes differ by less than about 1% of the reference spread share a scalar, so an order by the scalar
is coarser than the order by the magnitude (the raw magnitude stays the official format).
"""
from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grafiqs.errors import InputError

FORMAT = "grafiqs-calibration-1"
SUFFIX = ".calibration.json"
CANNOT_ASSESS = -1
MIN_REFERENCE = 20  # images a fit needs: the 5th and 95th percentiles of fewer are one image each
LOW, HIGH = 5.0, 95.0  # reference percentiles that map near 90 and 10
FORMULA = "Q = round(h * (a + s * sigmoid((log10(magnitude) - x0) / w))), clamped to [0, 100]; -1: cannot assess"


@dataclass(frozen=True)
class SigmoidMapping:
    """OFIQ's sigmoid on x = log10(magnitude); h = 100, a = 1, s = -1 make it decreasing in the magnitude."""

    x0: float
    w: float
    h: float = 100.0
    a: float = 1.0
    s: float = -1.0

    def unrounded(self, magnitudes) -> np.ndarray:
        """The scalar before rounding and clamping, float64; NaN where the magnitude is NaN or negative."""
        m = np.asarray(magnitudes, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.log10(m) - self.x0) / self.w
        # sigmoid(z) = 1 / (1 + exp(-z)), written to stay finite for |z| large (magnitude 0: log10 = -inf)
        sigmoid = np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))
        return self.h * (self.a + self.s * sigmoid)

    def __call__(self, magnitudes) -> np.ndarray:
        """Integer scalars [0, 100] (int64), rounded half away from zero as OFIQ's std::round; -1 where NaN."""
        value = self.unrounded(magnitudes)
        rounded = np.clip(np.floor(np.abs(value) + 0.5) * np.sign(value), 0, 100)
        return np.where(np.isfinite(value), rounded, CANNOT_ASSESS).astype(np.int64)

    def parameters(self) -> dict:
        return {"x0": self.x0, "w": self.w, "h": self.h, "a": self.a, "s": self.s}


def fit_mapping(magnitudes) -> tuple[SigmoidMapping, dict]:
    """The mapping of a reference set's magnitudes (finite, positive ones; NaN are left out) and what it was
    fitted on: count and the log10 magnitudes at the 5th, 50th and 95th percentiles."""
    m = np.asarray(magnitudes, np.float64)
    x = np.log10(m[np.isfinite(m) & (m > 0)])
    if x.size < MIN_REFERENCE:
        raise InputError(f"a calibration needs at least {MIN_REFERENCE} reference images with a finite score, got "
                         f"{x.size}")
    low, median, high = np.percentile(x, [LOW, 50.0, HIGH])
    if not high > low:
        raise InputError("the reference magnitudes do not spread (5th and 95th percentiles are equal): give a "
                         "reference set of different images")
    mapping = SigmoidMapping(x0=float(median), w=float((high - low) / (2 * math.log(9))))
    return mapping, {"images": int(x.size), "log10_p5": float(low), "log10_p50": float(median),
                     "log10_p95": float(high)}


@dataclass
class Calibration:
    """Per-group mappings of one model (weights by SHA-256, colour order fed), and how they were fitted."""

    groups: dict[str, SigmoidMapping]
    weights_sha256: str
    colour_order: str  # "bgr" or "rgb": what the model was fed when the reference was scored
    reference: dict = field(default_factory=dict)  # folder, images, date, excluded, per-group percentiles

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "formula": FORMULA, "weights_sha256": self.weights_sha256,
            "colour_order": self.colour_order, "reference": self.reference,
            "groups": {g: m.parameters() for g, m in self.groups.items()}}, indent=1) + "\n"

    def check_for(self, weights_sha256: str, colour_order: str, source) -> None:
        """InputError unless the calibration belongs to these weights fed in this colour order."""
        if weights_sha256 != self.weights_sha256:
            raise InputError(f"calibration file {source} was fitted for other weights (sha256 {self.weights_sha256[:12]}..., "
                             f"these are {weights_sha256[:12]}...); fit one with --calibrate REFERENCE_FOLDER")
        if colour_order != self.colour_order:
            raise InputError(f"calibration file {source} was fitted on {self.colour_order.upper()} input, this run feeds "
                             f"{colour_order.upper()}; use the same colour order or fit anew with --calibrate")


def calibration_path_for(weights: str | Path) -> Path:
    """Where a model's calibration lives: beside its weights, `<weights>.calibration.json`."""
    return Path(str(weights) + SUFFIX)


def calibrate(magnitudes: dict[str, np.ndarray], weights_sha256: str, colour_order: str, reference: dict) -> Calibration:
    """Fit every group's mapping on the reference magnitudes (group -> [N]); `reference` describes the set."""
    groups, fits = {}, {}
    for group, values in magnitudes.items():
        groups[group], fits[group] = fit_mapping(values)
    when = datetime.date.today().isoformat()
    return Calibration(groups, weights_sha256, colour_order, {**reference, "fitted": when, "groups": fits})


def read_calibration(path: str | Path) -> Calibration:
    """A calibration file, checked; InputError naming the file and what is wrong."""
    from grafiqs.io.reading import read_text

    try:
        data = json.loads(read_text(path, "calibration file", limit=2**20))
    except ValueError as error:
        raise InputError(f"calibration file {path} is not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"calibration file {path} is not a {FORMAT} file (written by score.py --calibrate)")
    try:
        groups = {str(g): SigmoidMapping(**{k: float(p[k]) for k in ("x0", "w", "h", "a", "s")})
                  for g, p in data["groups"].items()}
        weights, colour = str(data["weights_sha256"]), str(data["colour_order"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"calibration file {path} lacks or mangles a field ({error!r})") from None
    bad = [g for g, m in groups.items() if not all(map(math.isfinite, m.parameters().values())) or m.w <= 0]
    if bad or not groups or colour not in ("bgr", "rgb"):
        raise InputError(f"calibration file {path}: unusable parameters ({', '.join(bad) or 'no group or colour order'})")
    return Calibration(groups, weights, colour, data.get("reference") or {})
