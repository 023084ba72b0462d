"""EDC / pAUC / CR-FIQA ERC: against slow loop oracles written from the definitions, and by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from grafiqs.errors import InputError
from grafiqs.evaluation.edc import (
    CRFIQA_RATES,
    crfiqa_erc,
    edc,
    edc_for_order,
    pair_quality,
    random_order_edc,
    step_pauc,
    theoretical_best_area,
    threshold_at_fmr,
    threshold_at_fnmr,
)

# ---------------------------------------------------------------------------- loop oracles


def ref_threshold_fmr(scores, mated, fmr):
    """Smallest v in {-inf} + non-mated scores with #{non-mated > v} <= fmr * #non-mated."""
    non_mated = [s for s, g in zip(scores, mated) if not g]
    best = None
    for v in sorted(set(non_mated), reverse=True) + [-math.inf]:  # the count grows as v falls
        if sum(x > v for x in non_mated) > fmr * len(non_mated) + 1e-9:
            break
        best = v
    return best


def ref_threshold_fnmr(scores, mated, fnmr):
    """Largest v in {-inf} + mated scores with #{mated <= v} <= fnmr * #mated."""
    genuine = [s for s, g in zip(scores, mated) if g]
    for v in sorted(set(genuine), reverse=True) + [-math.inf]:
        if sum(y <= v for y in genuine) <= fnmr * len(genuine) + 1e-9:
            return v
    raise AssertionError("unreachable")


def ref_edc(scores, mated, quality, threshold):
    """Loop over the distinct quality levels, discarding everything at or below each."""
    pairs = [(q, s <= threshold) for s, g, q in zip(scores, mated, quality) if g]
    n = len(pairs)
    discard, fnmr = [0.0], [sum(e for _, e in pairs) / n]
    levels = sorted({q for q, _ in pairs})
    for level in levels[:-1]:  # discarding the last level leaves nothing: the final point
        kept = [e for q, e in pairs if q > level]
        discard.append((n - len(kept)) / n)
        fnmr.append(sum(kept) / len(kept))
    return discard + [1.0], fnmr + [0.0]


def ref_pauc(discard, fnmr, limit):
    area = 0.0
    for i in range(len(discard) - 1):
        if discard[i] >= limit:
            break
        area += fnmr[i] * (min(discard[i + 1], limit) - discard[i])
    return area


def ref_best(s, limit):
    return s * s / 2 if limit >= s else s * limit - limit * limit / 2


def ref_erc(similarity, mated, quality, fmr):
    n = len(similarity)
    distance = [math.acos(min(1.0, max(-1.0, c))) / math.pi for c in similarity]
    order = sorted(range(n), key=lambda i: quality[i])  # Python's sort is stable
    fnmrs, thresholds = [], []
    for step in range(20):
        kept = order[int(step * 0.05 * n):]
        non_mated = np.array([distance[i] for i in kept if not mated[i]])
        genuine = [distance[i] for i in kept if mated[i]]
        best = None
        for c in sorted(non_mated):
            gap = abs(np.count_nonzero(non_mated <= c) / len(non_mated) - fmr)
            if best is None or gap < best[0]:
                best = (gap, c)
        threshold = math.nan if best is None else best[1]
        if not genuine:
            fnmrs.append(0.0)
        elif best is None:
            fnmrs.append(math.nan)
        else:
            fnmrs.append(sum(d > threshold for d in genuine) / len(genuine))
        thresholds.append(threshold)
    auc = sum((fnmrs[i] + fnmrs[i + 1]) / 2 * 0.05 for i in range(19))
    return fnmrs, thresholds, auc


def make_pairs(seed, levels=None, score_decimals=None, n_mated=300, n_non_mated=1500):
    rng = np.random.default_rng(seed)
    n = n_mated + n_non_mated
    mated = np.zeros(n, dtype=bool)
    mated[:n_mated] = True
    rng.shuffle(mated)
    scores = np.clip(np.where(mated, rng.normal(0.5, 0.2, n), rng.normal(0.0, 0.15, n)), -1, 1)
    quality = rng.normal(size=n) + 2 * scores  # weakly informative, so curves fall
    if levels is not None:
        quality = np.round(quality * levels / 4) / levels  # heavy ties
    if score_decimals is not None:
        scores = np.round(scores, score_decimals)
    return scores, mated, quality


CASES = [
    dict(seed=0),
    dict(seed=1, levels=3),
    dict(seed=2, levels=10, score_decimals=2),
    dict(seed=3, score_decimals=2),
    dict(seed=4, levels=1),
]

# ---------------------------------------------------------------------------- EDC vs oracle


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmr", [1e-3, 1e-2])
def test_edc_matches_loop_oracle(case, fmr):
    scores, mated, quality = make_pairs(**case)
    result = edc(scores, mated, quality, fmr=fmr)
    threshold = ref_threshold_fmr(scores.tolist(), mated.tolist(), fmr)
    assert result.threshold == threshold
    discard, fnmr = ref_edc(scores.tolist(), mated.tolist(), quality.tolist(), threshold)
    np.testing.assert_allclose(result.discard, discard, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.fnmr, fnmr, rtol=0, atol=1e-9)
    assert result.n_mated == mated.sum()
    for limit in (0.2, 0.3):
        p = result.pauc(limit)
        raw = ref_pauc(discard, fnmr, limit)
        assert p.raw == pytest.approx(raw, abs=1e-9)
        assert p.minus_best == pytest.approx(raw - ref_best(fnmr[0], limit), abs=1e-9)
        assert p.normalised == pytest.approx(raw / (fnmr[0] * limit), abs=1e-9)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("target", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_starting_error_threshold_matches_loop_oracle(case, target):
    scores, mated, quality = make_pairs(**case)
    threshold = threshold_at_fnmr(scores, mated, target)
    assert threshold == ref_threshold_fnmr(scores.tolist(), mated.tolist(), target)
    result = edc(scores, mated, quality, start_fnmr=target)
    assert result.threshold == threshold
    assert result.start_fnmr <= target + 1e-12


@pytest.mark.parametrize("case", CASES[:3])
@pytest.mark.parametrize("fmr", [1e-3, 1e-2])
def test_crfiqa_erc_matches_loop_oracle(case, fmr):
    similarity, mated, quality = make_pairs(**case)
    result = crfiqa_erc(similarity, mated, quality, fmr=fmr)
    fnmrs, thresholds, auc = ref_erc(similarity.tolist(), mated.tolist(), quality.tolist(), fmr)
    np.testing.assert_allclose(result.fnmr, fnmrs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.thresholds, thresholds, rtol=0, atol=1e-9)
    assert result.auc == pytest.approx(auc, abs=1e-9)
    np.testing.assert_array_equal(result.rates, [i * 0.05 for i in range(20)])


# ---------------------------------------------------------------------------- by hand

# 6 mated + 10 non-mated pairs, interleaved; non-mated qualities must not matter.
HAND_MATED = np.array([1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
HAND_SCORES = np.empty(16)
HAND_SCORES[HAND_MATED] = [8, 5, 9.5, 10, 8.5, 12]
HAND_SCORES[~HAND_MATED] = np.arange(10.0)
HAND_QUALITY = np.empty(16)
HAND_QUALITY[HAND_MATED] = [1, 2, 2, 3, 3, 4]
HAND_QUALITY[~HAND_MATED] = [0, 9, 1, 5, 2, 7, 3, 3, 0, 4]


def test_edc_by_hand():
    # FMR 0.1 of 10 non-mated: k = 1 false accept, t = 2nd largest = 8, accept iff > 8.
    # Errors (score <= 8) at mated scores 8 (q 1) and 5 (q 2): FNMR 2/6 at the start.
    result = edc(HAND_SCORES, HAND_MATED, HAND_QUALITY, fmr=0.1)
    assert result.threshold == 8
    # discard q1 -> 1 of 5 left wrong; q<=2 -> 0 of 3; q<=3 -> 0 of 1; everything -> 0.
    np.testing.assert_allclose(result.discard, [0, 1 / 6, 3 / 6, 5 / 6, 1])
    np.testing.assert_allclose(result.fnmr, [1 / 3, 1 / 5, 0, 0, 0])
    p2, p3 = result.pauc(0.2), result.pauc(0.3)
    assert p2.raw == pytest.approx(1 / 3 * 1 / 6 + 1 / 5 * (0.2 - 1 / 6))  # 14/225
    assert p3.raw == pytest.approx(37 / 450)
    assert p2.minus_best == pytest.approx(14 / 225 - (1 / 3 * 0.2 - 0.2**2 / 2))
    assert p3.minus_best == pytest.approx(37 / 450 - (1 / 3 * 0.3 - 0.3**2 / 2))
    assert p2.normalised == pytest.approx(14 / 15)
    assert p3.normalised == pytest.approx(37 / 45)


def test_thresholds_by_hand():
    # Tied non-mated 9, 9: "> 8" would accept 2 > k = 1, so the threshold rises to 9 (FMR 0).
    scores = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 9, 20.0])
    mated = np.array([0] * 10 + [1], dtype=bool)
    assert threshold_at_fmr(scores, mated, 0.1) == 9
    assert threshold_at_fmr(scores, mated, 0.2) == 7
    assert threshold_at_fmr(scores, mated, 0.0) == 9
    assert threshold_at_fmr(scores, mated, 1.0) == -math.inf
    # Mated [5, 8, 8.5, 9.5, 10, 12]: target 0.2 -> 1 reject allowed -> t = 5 (FNMR 1/6).
    assert threshold_at_fnmr(HAND_SCORES, HAND_MATED, 0.2) == 5
    assert threshold_at_fnmr(HAND_SCORES, HAND_MATED, 0.5) == 8.5
    assert threshold_at_fnmr(HAND_SCORES, HAND_MATED, 0.1) == -math.inf
    assert threshold_at_fnmr(HAND_SCORES, HAND_MATED, 1.0) == 12
    tied = np.array([5, 8, 8, 9.0])
    assert threshold_at_fnmr(tied, np.ones(4, bool), 0.5) == 5  # 8 would reject 3 > 2


def test_crfiqa_erc_by_hand():
    # Pairs in quality order 0..9: (mated, distance).
    mated = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0], dtype=bool)
    distance = np.array([0.40, 0.20, 0.30, 0.35, 0.10, 0.45, 0.15, 0.50, 0.05, 0.48])
    quality = np.arange(10.0)
    permutation = np.random.default_rng(0).permutation(10)  # input order must not matter
    result = crfiqa_erc(np.cos(distance * np.pi)[permutation], mated[permutation],
                        quality[permutation], fmr=0.2)
    # int(rate * 10) drops 0,0,1,1,2,2,...,9,9.  Drop 0: threshold = 0.20 (FMR 1/5), mated
    # 0.40, 0.30 rejected -> 2/5.  Drop 1: 0.30 of 4 -> 1/4.  Drop 2: non-mated 0.35..0.50,
    # FMR 1/4 closest -> 0.35, no mated above -> 0.  Drop 9: no mated pair left -> 0.
    expected = [0.4, 0.4, 0.25, 0.25] + [0.0] * 16
    np.testing.assert_allclose(result.fnmr, expected, atol=1e-12)
    np.testing.assert_allclose(result.thresholds,
                               [0.2] * 4 + [0.35] * 4 + [0.45] * 4 + [0.48] * 8, atol=1e-12)
    assert result.auc == pytest.approx(0.05 * (0.4 + 0.325 + 0.25 + 0.125))


def test_crfiqa_erc_closeness_tie_goes_to_smaller_distance():
    # Non-mated distances 0.1..0.4: FMRs 0.25 and 0.5 are equally far from 0.375.
    distance = np.array([0.1, 0.2, 0.3, 0.4, 0.25])
    mated = np.array([0, 0, 0, 0, 1], dtype=bool)
    result = crfiqa_erc(np.cos(distance * np.pi), mated, np.ones(5), fmr=0.375)
    assert result.thresholds[0] == pytest.approx(0.1)
    assert result.fnmr[0] == 1.0


def test_crfiqa_erc_no_non_mated_left_is_nan():
    mated = np.array([0, 1], dtype=bool)
    result = crfiqa_erc([0.0, 0.9], mated, [0.0, 1.0], fmr=0.5)  # 0.95 * 2 drops the non-mated
    assert result.fnmr[0] == 0.0 and math.isnan(result.fnmr[-1]) and math.isnan(result.auc)


# ---------------------------------------------------------------------------- edge cases


def test_all_qualities_equal():
    scores, mated, _ = make_pairs(5)
    result = edc(scores, mated, np.full(scores.size, 0.7), fmr=1e-2)
    s = result.start_fnmr
    np.testing.assert_array_equal(result.discard, [0, 1])
    np.testing.assert_array_equal(result.fnmr, [s, 0])
    p = result.pauc(0.3)
    assert p.raw == pytest.approx(0.3 * s) and p.normalised == pytest.approx(1.0)


def test_zero_starting_error_gives_nan_normalised():
    scores, mated, quality = make_pairs(6)
    scores[mated] = 0.99  # every mated pair accepted
    result = edc(scores, mated, quality, fmr=1e-3)
    assert result.start_fnmr == 0 and np.all(result.fnmr == 0)
    with np.errstate(all="raise"):
        p = result.pauc(0.2)
    assert p.raw == 0 and p.minus_best == 0 and math.isnan(p.normalised)


@pytest.mark.parametrize("case", CASES[:3])
def test_orientation_flip_equals_negation(case):
    scores, mated, quality = make_pairs(**case)
    a = edc(scores, mated, quality, fmr=1e-2, orientation="lower_is_better")
    b = edc(scores, mated, -quality, fmr=1e-2)
    np.testing.assert_array_equal(a.discard, b.discard)
    np.testing.assert_array_equal(a.fnmr, b.fnmr)
    c = crfiqa_erc(scores, mated, quality, fmr=1e-2, orientation="lower_is_better")
    d = crfiqa_erc(scores, mated, -quality, fmr=1e-2)
    np.testing.assert_array_equal(c.fnmr, d.fnmr)


def test_pair_quality_takes_the_worse_sample():
    a, b = np.array([1.0, 5.0, 3.0]), np.array([2.0, 4.0, 3.0])
    np.testing.assert_array_equal(pair_quality(a, b), [1, 4, 3])
    np.testing.assert_array_equal(pair_quality(a, b, "lower_is_better"), [-2, -5, -3])


def test_reference_orders_share_the_threshold():
    scores, mated, quality = make_pairs(7)
    fiqa = edc(scores, mated, quality, fmr=1e-2)
    random = random_order_edc(scores, mated, fiqa.threshold, seed=3)
    assert random.start_fnmr == fiqa.start_fnmr
    assert random.discard.size == mated.sum() + 1  # no ties in random qualities
    # The best possible order: every error first, one at a time.
    errors = scores <= fiqa.threshold
    jitter = np.random.default_rng(0).random(scores.size) / 2
    oracle = edc_for_order(scores, mated, jitter - errors, fiqa.threshold)
    for limit in (0.2, 0.3):
        assert oracle.pauc(limit).raw <= min(fiqa.pauc(limit).raw, random.pauc(limit).raw)
        for result in (fiqa, random, oracle):  # the theoretical best is a lower bound
            assert result.pauc(limit).minus_best >= 0


def test_step_pauc_and_best_area():
    assert step_pauc(np.array([0, 0.5, 1.0]), np.array([0.4, 0.1, 0.0]), 0.2) == pytest.approx(0.08)
    assert theoretical_best_area(0.1, 0.3) == pytest.approx(0.005)
    assert theoretical_best_area(0.5, 0.2) == pytest.approx(0.5 * 0.2 - 0.02)


@pytest.mark.parametrize("kwargs", [dict(), dict(fmr=1e-3, threshold=0.3)])
def test_threshold_must_be_fixed_exactly_once(kwargs):
    scores, mated, quality = make_pairs(0)
    with pytest.raises(InputError):
        edc(scores, mated, quality, **kwargs)


def test_bad_inputs_raise():
    scores, mated, quality = make_pairs(0)
    with pytest.raises(InputError):
        edc(scores, mated, quality, fmr=1e-3, orientation="bigger")
    with pytest.raises(InputError):
        edc(scores, mated, quality[:-1], fmr=1e-3)
    quality[0] = np.nan
    with pytest.raises(InputError):
        edc(scores, mated, quality, fmr=1e-3)
    with pytest.raises(InputError):
        edc(scores, mated.astype(int) * 2, quality, fmr=1e-3)
    with pytest.raises(InputError):
        step_pauc(np.array([0.0, 1.0]), np.array([0.1, 0.0]), 0.0)
