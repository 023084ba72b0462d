"""Error-versus-Discard curves for face image quality, vectorised with numpy.

Two definitions live here, on purpose kept apart:

* `edc`: the EDC of ISO/IEC 29794-1:2024 and Schlett et al., "Considerations on the
  evaluation of biometric quality assessment algorithms" (IEEE T-BIOM 2024). The
  threshold is fixed once on all comparisons, only the mated comparisons' FNMR is
  tracked, pairs with tied quality are discarded together, and the curve is summarised
  by a step-integrated partial AUC (pAUC) up to a discard limit.
* `crfiqa_erc`: the older ERC of the CR-FIQA code (`erc.py`) the GraFIQs paper's numbers
  come from. It discards all pairs, recomputes the threshold after every discard step and
  integrates with the trapezoid rule; its numbers are not comparable with `edc`'s.

Conventions shared by both: a comparison score is a similarity (higher = more alike, e.g.
cosine), a quality is "higher is better" unless `orientation="lower_is_better"` says that a
larger raw value is worse (GraFIQs gradient magnitudes), and a pair's quality is that of its
worse sample (`pair_quality`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from grafiqs.errors import InputError

Orientation = Literal["higher_is_better", "lower_is_better"]
ORIENTATIONS = ("higher_is_better", "lower_is_better")

# Rates of the CR-FIQA ERC: np.arange(0, 0.98, 0.05) as in its erc.py, i.e. 0, 0.05, ..., 0.95
# with the same float values (0.15000000000000002, ...), so that int(rate * N) matches it.
CRFIQA_RATES = np.arange(0, 0.98, 0.05)


def _count_within(rate: float, total: int) -> int:
    """floor(rate * total), tolerant of float error (0.29 * 100 = 28.999999999999996 must give 29)."""
    return math.floor(rate * total * (1 + 1e-12))


def to_higher_is_better(quality, orientation: Orientation = "higher_is_better") -> np.ndarray:
    """Qualities as float64 with "higher is better", negating them when larger raw values are worse."""
    if orientation not in ORIENTATIONS:
        raise InputError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    q = np.asarray(quality, dtype=np.float64)
    return -q if orientation == "lower_is_better" else q


def pair_quality(q_a, q_b, orientation: Orientation = "higher_is_better") -> np.ndarray:
    """A pair's "higher is better" quality: that of its worse sample.

    The orientation is applied per sample before taking the worse one, so for raw values
    where larger is worse this is -max(q_a, q_b), not -min(q_a, q_b).
    """
    return np.minimum(to_higher_is_better(q_a, orientation), to_higher_is_better(q_b, orientation))


def _validate(scores, mated, quality=None, orientation: Orientation = "higher_is_better"):
    """1-D float scores, boolean mated flags and (optionally) "higher is better" qualities of one length."""
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(mated)
    if m.dtype != bool:
        if m.size and not np.isin(m, (0, 1)).all():
            raise InputError("mated must be boolean (or 0/1): True where both samples show the same person")
        m = m.astype(bool)
    arrays = [s, m]
    if quality is not None:
        arrays.append(to_higher_is_better(quality, orientation))
    if any(a.ndim != 1 for a in arrays) or len({a.size for a in arrays}) != 1:
        raise InputError(
            "scores, mated and quality must be 1-D arrays with one entry per pair, got shapes "
            + ", ".join(str(a.shape) for a in arrays)
        )
    if np.isnan(s).any() or (quality is not None and np.isnan(arrays[2]).any()):
        raise InputError("scores and qualities must not contain NaN; drop or rescore those pairs first")
    return arrays


# ---------------------------------------------------------------------------- thresholds


def threshold_at_fmr(scores, mated, fmr: float) -> float:
    """The smallest threshold t with FMR(t) = #{non-mated scores > t} / #non-mated <= fmr.

    A comparison is accepted iff score > t. With this strict rule the minimum exists and is
    a non-mated score: the (k+1)-th largest one, k = floor(fmr * #non-mated); with ">=" it
    would only be an infimum. It is -inf (accept everything) when fmr allows all non-mated.
    """
    s, m = _validate(scores, mated)
    if not 0 <= fmr <= 1:
        raise InputError(f"fmr must lie in [0, 1], got {fmr}")
    non_mated = s[~m]
    if non_mated.size == 0:
        raise InputError("a threshold at a target FMR needs at least one non-mated pair")
    k = _count_within(fmr, non_mated.size)
    if k >= non_mated.size:
        return -math.inf
    index = non_mated.size - 1 - k  # (k+1)-th largest in ascending order
    return float(np.partition(non_mated, index)[index])


def threshold_at_fnmr(scores, mated, fnmr: float) -> float:
    """The "starting error" threshold: the largest t among the mated scores and -inf whose
    FNMR(t) = #{mated scores <= t} / #mated does not exceed `fnmr`.

    Same acceptance rule as `threshold_at_fmr` (accepted iff score > t). The EDC then starts
    at an FNMR as close to the target as the data allow from below (ties can keep it lower).
    """
    s, m = _validate(scores, mated)
    if not 0 <= fnmr <= 1:
        raise InputError(f"fnmr must lie in [0, 1], got {fnmr}")
    genuine = s[m]
    if genuine.size == 0:
        raise InputError("a threshold at a starting FNMR needs at least one mated pair")
    k = _count_within(fnmr, genuine.size)
    if k >= genuine.size:
        return float(genuine.max())
    first_rejected_too_many = np.partition(genuine, k)[k]  # (k+1)-th smallest
    below = genuine[genuine < first_rejected_too_many]
    return float(below.max()) if below.size else -math.inf


# ---------------------------------------------------------------------------- EDC


@dataclass(frozen=True)
class PAUC:
    """A pAUC at one discard limit, raw, minus the theoretical best area, and over s * limit."""

    limit: float
    raw: float
    minus_best: float
    normalised: float  # 1.0 = no better than not discarding; NaN when the starting FNMR is 0


def step_pauc(discard: np.ndarray, fnmr: np.ndarray, limit: float) -> float:
    """Area under a left-step curve up to `limit`: fnmr[i] holds on [discard[i], discard[i+1])."""
    if not 0 < limit <= 1:
        raise InputError(f"the pAUC discard limit must lie in (0, 1], got {limit}")
    widths = np.diff(np.clip(discard, 0.0, limit))
    return float(np.dot(fnmr[:-1], widths))


def theoretical_best_area(start_fnmr: float, limit: float) -> float:
    """Area up to `limit` under max(s - discard, 0): every discarded pair was an error."""
    s = start_fnmr
    return (s * s - max(s - limit, 0.0) ** 2) / 2


@dataclass(frozen=True)
class EDCResult:
    """An EDC: FNMR of the mated pairs kept after discarding the lowest-quality share `discard`.

    Points exist at discard 0 and wherever the pair quality changes; the last point is at
    discard 1 with FNMR 0 (nothing kept, nothing wrongly rejected).
    """

    discard: np.ndarray
    fnmr: np.ndarray
    threshold: float  # comparisons with score > threshold are accepted
    n_mated: int

    @property
    def start_fnmr(self) -> float:
        """FNMR of all mated pairs, before any discarding."""
        return float(self.fnmr[0])

    def pauc(self, limit: float) -> PAUC:
        """The pAUC up to `limit` (0.2 and 0.3 are usual), with its two reference-relative forms."""
        raw = step_pauc(self.discard, self.fnmr, limit)
        s = self.start_fnmr
        normalised = raw / (s * limit) if s > 0 else math.nan
        return PAUC(limit, raw, raw - theoretical_best_area(s, limit), normalised)


def edc_curve(errors, quality) -> tuple[np.ndarray, np.ndarray]:
    """(discard, fnmr) from each mated pair's error flag and "higher is better" quality.

    One sort, a cumulative error count and the positions where the sorted quality changes:
    discarding up to such a position drops a whole tie group at once.
    """
    errors = np.asarray(errors, dtype=bool)
    quality = np.asarray(quality, dtype=np.float64)
    n = errors.size
    if n == 0:
        raise InputError("an EDC needs at least one mated pair")
    order = np.argsort(quality)
    sorted_quality = quality[order]
    cumulative_errors = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(errors[order], out=cumulative_errors[1:])
    discarded = np.concatenate(([0], np.flatnonzero(sorted_quality[1:] != sorted_quality[:-1]) + 1))
    fnmr = (cumulative_errors[-1] - cumulative_errors[discarded]) / (n - discarded)
    return np.append(discarded / n, 1.0), np.append(fnmr, 0.0)


def edc_for_order(scores, mated, quality, threshold: float, *,
                  orientation: Orientation = "higher_is_better") -> EDCResult:
    """EDC of any discard order at a fixed threshold.

    Pass the threshold of a FIQA's EDC with random qualities, known-severity qualities or
    another FIQA's, so that every curve counts the same errors and only the order differs.
    """
    s, m, q = _validate(scores, mated, quality, orientation)
    genuine = s[m]
    discard, fnmr = edc_curve(genuine <= threshold, q[m])
    return EDCResult(discard, fnmr, float(threshold), int(genuine.size))


def random_order_edc(scores, mated, threshold: float, *, seed: int = 0) -> EDCResult:
    """EDC of a random discard order (tie-free uniform qualities): the baseline no FIQA should lose to."""
    quality = np.random.default_rng(seed).random(np.shape(scores))
    return edc_for_order(scores, mated, quality, threshold)


def edc(scores, mated, quality, *, fmr: float | None = None, start_fnmr: float | None = None,
        threshold: float | None = None, orientation: Orientation = "higher_is_better") -> EDCResult:
    """The ISO/IEC 29794-1 FNMR EDC of per-pair similarity `scores` and pair `quality`.

    The threshold is fixed once on all comparisons by exactly one of: a target `fmr`
    (`threshold_at_fmr`), a starting error `start_fnmr` (`threshold_at_fnmr`) or an explicit
    `threshold`. Discard fractions are over the mated pairs, whose FNMR is the error.
    """
    if sum(x is not None for x in (fmr, start_fnmr, threshold)) != 1:
        raise InputError("give exactly one of fmr, start_fnmr or threshold to fix the EDC threshold")
    if fmr is not None:
        threshold = threshold_at_fmr(scores, mated, fmr)
    elif start_fnmr is not None:
        threshold = threshold_at_fnmr(scores, mated, start_fnmr)
    return edc_for_order(scores, mated, quality, threshold, orientation=orientation)


# ---------------------------------------------------------------------------- CR-FIQA ERC


def _smallest_kept(ascending: np.ndarray, kept: np.ndarray, needed: int) -> np.ndarray:
    """The kept values of `ascending`, in order, from the first up to and past the `needed`-th: until a value
    larger than the `needed`-th one, so that its tie group is complete (or all of them)."""
    step = max(1 << 16, 4 * needed)
    parts, found, needed_value = [], 0, None
    for start in range(0, ascending.size, step):
        part = ascending[start:start + step][kept[start:start + step]]
        if needed_value is None and found + part.size >= needed:
            needed_value = part[needed - 1 - found]
        parts.append(part)
        found += part.size
        if needed_value is not None and part.size and part[-1] > needed_value:
            break
    return np.concatenate(parts) if parts else ascending[:0]


@dataclass(frozen=True)
class ERCResult:
    """The CR-FIQA ERC at one target FMR: per rate, the recomputed distance threshold and FNMR."""

    rates: np.ndarray
    fnmr: np.ndarray
    thresholds: np.ndarray  # distance thresholds: accepted iff distance < threshold
    fmr: float
    auc: float  # trapezoid rule over the rates, not normalised


# The abscissa erc.py integrates over: (100 * np.arange(0, 0.98, 0.05)) / 100, which differs from
# CRFIQA_RATES in the last bit of some rates.
_CRFIQA_AUC_RATES = (100 * CRFIQA_RATES) / 100


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoid rule written as numpy's trapz (what sklearn.metrics.auc calls) evaluates it."""
    return float(np.add.reduce(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def crfiqa_erc(similarity, mated, quality, *, fmr: float = 1e-3,
               orientation: Orientation = "higher_is_better") -> ERCResult:
    """The ERC as CR-FIQA's ERC/erc.py (getFNMRFixedTH) with ERC/roc.py (get_eer_threshold) computes it,
    the protocol of the GraFIQs paper's numbers; erc_ijbc.py applies the same rule to IJB-C template pairs.

    * distance = arccos(clip(cosine, -1, 1)) / pi;
    * pairs sorted by quality, lowest first, then int(r * N) of all N pairs (mated and non-mated)
      dropped at each rate r in `CRFIQA_RATES`;
    * threshold, recomputed on the remaining pairs as roc.py does: the candidates are all their
      distinct distances, mated ones included; a candidate t has FMR = #{non-mated <= t} /
      #non-mated (0 for a mated distance below every non-mated one); the candidate with the
      smallest |FMR - fmr| (evaluated in float64 as roc.py does) wins, and of equally close ones
      the largest distance (roc.py's argmin runs over the distances in descending order);
    * a pair is accepted iff distance < threshold; FNMR = 1 - #{mated accepted} / #mated;
    * AUC = trapezoid rule of FNMR over the rates 0 to 0.95, as sklearn.metrics.auc in erc.py.

    Two choices where erc.py is not determined: pairs of equal quality keep their input order
    (a stable sort; erc.py's np.argsort is unstable, so which of them it drops depends on the
    numpy build), and the FNMR is 0 when no mated pair remains (erc.py divides by zero). With no
    non-mated pair left, roc.py's FMRs are 0/0 = NaN and its argmin takes the first candidate,
    the largest distance: that is followed, so only mated pairs below it are accepted.

    All distances are sorted once (`CRFIQAERC` keeps that order for further quality orders); each
    rate then only masks it, so no re-sorting, and reads just the smallest kept non-mated distances
    the threshold can be among.
    """
    return CRFIQAERC(similarity, mated)(quality, fmr=fmr, orientation=orientation)


def _roc_threshold(non_mated: np.ndarray, kept: np.ndarray, count: int, genuine: np.ndarray, fmr: float) -> float:
    """roc.py's threshold for the kept pairs: `non_mated` all non-mated distances ascending, `kept` their mask
    (`count` of them kept), `genuine` the kept mated distances ascending.

    The FMR of a candidate t is k / count with k = #{kept non-mated <= t}: k is 0 (reachable only
    by a mated distance below every non-mated one) or the end of a tie group of the non-mated
    distances. |k / count - fmr| falls and then rises with k, so only the groups up to the first
    one past fmr * count are needed. Of the winning k the largest candidate is kept: the largest
    distance below the next non-mated distance, mated or not.
    """
    if count == 0:  # FMR 0/0 = NaN everywhere: roc.py's argmin takes its first candidate, the largest distance
        return float(genuine[-1])
    smallest = _smallest_kept(non_mated, kept, min(count, math.ceil(fmr * count) + 1))
    group_ends = np.flatnonzero(smallest[1:] != smallest[:-1]) + 1  # k with smallest[k - 1] < smallest[k]
    if smallest.size == count:  # every kept distance was read: the last group is complete too
        group_ends = np.append(group_ends, count)
    if genuine.size and genuine[0] < smallest[0]:
        group_ends = np.concatenate(([0], group_ends))
    gap = np.abs(group_ends / count - fmr)
    k = int(group_ends[np.flatnonzero(gap == gap.min())[-1]])  # equally close: the larger k, the larger distance
    if k == count:
        return float(max(smallest[-1], genuine[-1])) if genuine.size else float(smallest[-1])
    below = int(np.searchsorted(genuine, smallest[k], side="left"))  # mated distances below the next non-mated
    candidates = ([smallest[k - 1]] if k else []) + ([genuine[below - 1]] if below else [])
    return float(max(candidates))


class CRFIQAERC:
    """`crfiqa_erc` for many quality orders of one set of comparisons: the distances are sorted once."""

    def __init__(self, similarity, mated):
        sim, m = _validate(similarity, mated)
        if sim.size == 0:
            raise InputError("an ERC needs at least one pair")
        distance = np.arccos(np.clip(sim, -1.0, 1.0)) / np.pi
        self.by_distance = np.argsort(distance)  # equal distances are interchangeable: no stable sort needed
        self.mated = m[self.by_distance]
        self.non_mated = distance[self.by_distance][~self.mated]  # ascending
        self.genuine = distance[self.by_distance][self.mated]
        self.size = sim.size

    def __call__(self, quality, *, fmr: float = 1e-3, orientation: Orientation = "higher_is_better") -> ERCResult:
        q = to_higher_is_better(quality, orientation)
        if q.shape != (self.size,) or np.isnan(q).any():
            raise InputError(f"quality must be a 1-D array of {self.size} numbers without NaN, got shape {q.shape}")
        n = self.size
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(q, kind="stable")] = np.arange(n)
        rank = rank[self.by_distance]
        non_mated, non_mated_rank = self.non_mated, rank[~self.mated]
        genuine_all, genuine_rank = self.genuine, rank[self.mated]
        fnmrs, thresholds = [], []
        for rate in CRFIQA_RATES:
            cut = int(rate * n)
            kept = non_mated_rank >= cut
            count = int(np.count_nonzero(kept))
            genuine = genuine_all[genuine_rank >= cut]  # ascending
            threshold = _roc_threshold(non_mated, kept, count, genuine, fmr)
            if genuine.size == 0:
                fnmrs.append(0.0)
            else:
                accepted = int(np.searchsorted(genuine, threshold, side="left"))  # distance < threshold
                fnmrs.append(1 - accepted / genuine.size)
            thresholds.append(threshold)
        fnmr = np.array(fnmrs)
        return ERCResult(CRFIQA_RATES.copy(), fnmr, np.array(thresholds), float(fmr),
                         _trapezoid(fnmr, _CRFIQA_AUC_RATES))
