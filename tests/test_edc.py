"""EDC / pAUC / CR-FIQA ERC: against slow loop oracles written from the definitions, and by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from grafiqs.errors import InputError
from grafiqs.evaluation.edc import (
    CRFIQAERC,
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


def ref_roc_thresholds(genuine, non_mated, fmrs):
    """CR-FIQA roc.py's get_eer_threshold(genuine, non_mated, ds_scores=True), one threshold per target FMR.

    As roc.py enumerates them: every distinct distance, mated ones included, in descending
    order; a candidate t has FMR = #{non-mated <= t} / #non-mated (NaN with no non-mated pair);
    numpy's argmin of |FMR - target| takes the first smallest value (the first one when all are NaN).
    """
    non_mated = np.asarray(non_mated, dtype=np.float64)
    candidates = sorted(set(genuine) | set(non_mated.tolist()), reverse=True)
    rates = [np.count_nonzero(non_mated <= t) / non_mated.size if non_mated.size else math.nan for t in candidates]
    thresholds = []
    for target in fmrs:
        best, best_gap = None, None
        for t, rate in zip(candidates, rates):
            gap = abs(rate - target)
            if best is None or gap < best_gap:  # strictly smaller: ties keep the earlier, larger distance
                best, best_gap = t, gap
        thresholds.append(best)
    return thresholds


def ref_erc(similarity, mated, quality, fmrs):
    """CR-FIQA erc.py's getFNMRFixedTH as loops, at each target FMR: {fmr: (fnmrs, thresholds, auc)}.

    Pairs sorted by quality, lowest first (stable: the documented choice where erc.py's argsort
    is unstable), int(rate * N) dropped, threshold by roc.py, accepted iff distance < threshold,
    FNMR 0 without mated pairs (erc.py divides by zero), sklearn's trapezoid AUC over
    (100 * rates) / 100.
    """
    n = len(similarity)
    distance = (np.arccos(np.clip(np.asarray(similarity, dtype=np.float64), -1.0, 1.0)) / math.pi).tolist()
    order = sorted(range(n), key=lambda i: quality[i])  # Python's sort is stable
    rates = np.arange(0, 0.98, 0.05)
    out = {fmr: ([], []) for fmr in fmrs}
    for rate in rates:
        kept = order[int(rate * n):]
        genuine = [distance[i] for i in kept if mated[i]]
        non_mated = [distance[i] for i in kept if not mated[i]]
        for fmr, threshold in zip(fmrs, ref_roc_thresholds(genuine, non_mated, fmrs)):
            accepted = [g for g in genuine if g < threshold]
            out[fmr][0].append(1 - len(accepted) / len(genuine) if genuine else 0.0)
            out[fmr][1].append(threshold)
    x = (100 * rates) / 100
    return {fmr: (fnmrs, thresholds, sum((x[i + 1] - x[i]) * (fnmrs[i] + fnmrs[i + 1]) / 2 for i in range(19)))
            for fmr, (fnmrs, thresholds) in out.items()}


def assert_erc_matches_oracle(similarity, mated, quality, fmrs, threshold_atol=1e-12):
    reference = ref_erc(np.asarray(similarity).tolist(), np.asarray(mated).tolist(), np.asarray(quality).tolist(), fmrs)
    erc_of = CRFIQAERC(similarity, mated)
    for fmr in fmrs:
        result = erc_of(quality, fmr=fmr)
        fnmrs, thresholds, auc = reference[fmr]
        np.testing.assert_allclose(result.fnmr, fnmrs, rtol=0, atol=1e-12, err_msg=f"FMR {fmr}")
        np.testing.assert_allclose(result.thresholds, thresholds, rtol=0, atol=threshold_atol, err_msg=f"FMR {fmr}")
        assert result.auc == pytest.approx(auc, rel=0, abs=1e-12)


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


CRFIQA_FMRS = (1e-2, 1e-3, 1e-4)


@pytest.mark.parametrize("case", CASES[:4])
def test_crfiqa_erc_matches_erc_py_oracle(case):
    similarity, mated, quality = make_pairs(**case, n_mated=200, n_non_mated=1000)
    assert_erc_matches_oracle(similarity, mated, quality, CRFIQA_FMRS)
    np.testing.assert_array_equal(crfiqa_erc(similarity, mated, quality).rates, [i * 0.05 for i in range(20)])


def test_crfiqa_erc_matches_erc_py_oracle_when_mated_and_non_mated_overlap():
    # Uninformative scores on a coarse grid: mated and non-mated distances interleave and tie,
    # non-mated ones can be the smallest (FMR 0 out of reach) and later rates run out of pairs.
    rng = np.random.default_rng(11)
    for size in (7, 12, 25, 60, 400):
        mated = rng.random(size) < 0.3
        similarity = np.round(rng.uniform(-1, 1, size), 1)
        quality = rng.integers(0, 4, size).astype(float)
        assert_erc_matches_oracle(similarity, mated, quality, CRFIQA_FMRS + (0.25, 0.5, 0.95))


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


def erc_of_distances(distance, mated, quality=None, fmr=1e-3):
    """crfiqa_erc on pairs given by distance (similarity cos(pi d)), with the loop oracle's verdict checked too."""
    distance = np.asarray(distance, dtype=np.float64)
    mated = np.asarray(mated, dtype=bool)
    quality = np.zeros(distance.size) if quality is None else np.asarray(quality, dtype=np.float64)
    similarity = np.cos(distance * np.pi)
    assert_erc_matches_oracle(similarity, mated, quality, (fmr,))
    return crfiqa_erc(similarity, mated, quality, fmr=fmr)


NON_MATED_TENTHS = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]


def test_crfiqa_erc_threshold_can_be_a_mated_distance():
    # FMR 0.1 of 10 non-mated is met exactly (k = 1) by every candidate in [0.05, 0.15): roc.py
    # takes the largest, the mated 0.10, and accepts 0.08 only. The old reading (non-mated
    # candidates only) took 0.05: FNMR 1.
    result = erc_of_distances(NON_MATED_TENTHS + [0.08, 0.10, 0.60], [0] * 10 + [1] * 3, fmr=0.1)
    assert result.thresholds[0] == pytest.approx(0.10, abs=1e-12)
    assert result.fnmr[0] == pytest.approx(2 / 3, abs=1e-12)


def test_crfiqa_erc_closeness_tie_goes_to_larger_distance():
    # Non-mated 0.1..0.4: FMRs 0.25 (at 0.1) and 0.5 (at 0.2) are equally far from 0.375; roc.py's
    # argmin over descending distances takes 0.2, which accepts the mated 0.15 (was 0.1: FNMR 1).
    result = erc_of_distances([0.1, 0.2, 0.3, 0.4, 0.15, 0.35], [0, 0, 0, 0, 1, 1], fmr=0.375)
    assert result.thresholds[0] == pytest.approx(0.2, abs=1e-12)
    assert result.fnmr[0] == 0.5


def test_crfiqa_erc_pair_at_the_threshold_is_rejected():
    # The threshold is the non-mated 0.05; the mated pair at exactly 0.05 is not < it (was <=: FNMR 0.5).
    result = erc_of_distances(NON_MATED_TENTHS + [0.05, 0.5], [0] * 10 + [1] * 2, fmr=0.1)
    assert result.thresholds[0] == pytest.approx(0.05, abs=1e-12)
    assert result.fnmr[0] == 1.0


def test_crfiqa_erc_fmr_zero_when_target_is_below_half_a_false_match():
    # FMR 1e-2 of 10 non-mated (0.3..0.75): FMR 0 (gap 0.01) beats 1/10 (gap 0.09). It is reached by
    # the mated distances below 0.3; the largest, 0.2, is the threshold and only 0.1 is accepted.
    non_mated = [0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75]
    result = erc_of_distances(non_mated + [0.1, 0.2, 0.5], [0] * 10 + [1] * 3, fmr=1e-2)
    assert result.thresholds[0] == pytest.approx(0.2, abs=1e-12)
    assert result.fnmr[0] == pytest.approx(2 / 3, abs=1e-12)
    # No mated distance below 0.3: FMR 0 is no candidate, 1/10 wins, at its largest candidate (mated 0.32).
    result = erc_of_distances(non_mated + [0.32, 0.5], [0] * 10 + [1] * 2, fmr=1e-2)
    assert result.thresholds[0] == pytest.approx(0.32, abs=1e-12)
    assert result.fnmr[0] == 1.0


def test_crfiqa_erc_by_hand():
    # Pairs in quality order 0..9: (mated, distance); input order must not matter.
    mated = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0], dtype=bool)
    distance = np.array([0.40, 0.20, 0.30, 0.35, 0.10, 0.45, 0.15, 0.50, 0.05, 0.48])
    permutation = np.random.default_rng(0).permutation(10)
    result = erc_of_distances(distance[permutation], mated[permutation], np.arange(10.0)[permutation], fmr=0.2)
    # int(rate * 10) drops 0,0,1,1,2,2,...,9,9 pairs.  Drop 0: k = 1 of 5 non-mated meets 0.2, its largest
    # candidate is the mated 0.30 (below the non-mated 0.35): 0.05, 0.10, 0.15 accepted -> 2/5.
    # Drop 1: 1/4.  Drop 2-5: 1/n non-mated is closest, threshold 0.35 or 0.45, every mated accepted.
    # Drop 6: non-mated 0.48, 0.50: FMR 0 (gap 0.2) beats 1/2 (0.3), threshold the mated 0.15 -> 1/2.
    # Drop 7, 8: threshold the mated 0.05 itself -> 1.  Drop 9: no mated pair left -> 0.
    expected = [0.4, 0.4, 0.25, 0.25] + [0.0] * 8 + [0.5, 0.5] + [1.0] * 4 + [0.0, 0.0]
    np.testing.assert_allclose(result.fnmr, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.thresholds, [0.30] * 4 + [0.35] * 4 + [0.45] * 4 + [0.15] * 2
                               + [0.05] * 4 + [0.48] * 2, rtol=0, atol=1e-12)
    assert result.auc == pytest.approx(0.05 * (6.3 - 0.2), abs=1e-12)


def test_crfiqa_erc_without_non_mated_pairs_takes_the_largest_distance():
    # At rates >= 0.5 int(rate * 2) drops the non-mated pair: roc.py's FMRs are then 0/0 = NaN and its
    # argmin takes the largest distance, the mated pair's own, which is not < itself: FNMR 1.
    result = erc_of_distances([0.5, 0.2], [0, 1], [0.0, 1.0], fmr=0.5)
    np.testing.assert_array_equal(result.fnmr, [0.0] * 10 + [1.0] * 10)
    assert result.thresholds[-1] == pytest.approx(0.2, abs=1e-12)
    assert result.auc == pytest.approx(0.05 * 9.5, abs=1e-12)


def test_crfiqa_erc_on_ijbc_templates_follows_erc_ijbc_py():
    """The benchmark's IJB-C path (TemplatePairSet) against CR-FIQA's ijb_qs_pair_file.py + erc_ijbc.py as loops:
    template feature = normalised sum over media of the media's mean image feature, template quality = its
    worst image's, pair quality = the worse template's, then erc.py's rule on the template distances."""
    from grafiqs.data.ijbc import IJBCProtocol, TemplatePairSet

    rng = np.random.default_rng(3)
    subjects, templates_per_subject, dim = 25, 4, 16
    template_of, media_of = [], []
    for t in range(subjects * templates_per_subject):
        for _ in range(int(rng.integers(1, 5))):
            template_of.append(t + 1)
            media_of.append(1000 * (t + 1) + int(rng.integers(0, 2)))  # two media per template at most
    template_of, media_of = np.array(template_of), np.array(media_of)
    centres = rng.normal(size=(subjects, dim))
    features = centres[(template_of - 1) // templates_per_subject] + rng.normal(scale=0.9, size=(template_of.size, dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)  # CR-FIQA's image features are L2-normalised
    image_quality = rng.normal(size=template_of.size)
    genuine = [(a, b) for s in range(subjects) for a in range(s * 4 + 1, s * 4 + 5) for b in range(a + 1, s * 4 + 5)]
    impostor = rng.integers(1, subjects * templates_per_subject + 1, size=(1500, 2))
    impostor = impostor[(impostor[:, 0] - 1) // 4 != (impostor[:, 1] - 1) // 4]
    pairs = np.concatenate([np.array(genuine), impostor])
    labels = np.arange(len(pairs)) < len(genuine)

    template_feature, template_quality = {}, {}
    for t in np.unique(template_of):
        mine = template_of == t
        media = [features[mine][media_of[mine] == m].mean(axis=0) for m in np.unique(media_of[mine])]
        summed = np.array(media, dtype=np.float32).sum(axis=0)
        template_feature[t] = (summed / np.linalg.norm(summed)).astype(np.float32)
        template_quality[t] = min(image_quality[mine])
    x = np.array([template_feature[a] for a, _ in pairs], dtype=np.float64)
    y = np.array([template_feature[b] for _, b in pairs], dtype=np.float64)
    similarity = np.sum(x * y, axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    quality = [min(template_quality[a], template_quality[b]) for a, b in pairs]
    reference = ref_erc(similarity.tolist(), labels.tolist(), quality, CRFIQA_FMRS)

    comparisons = TemplatePairSet(IJBCProtocol([f"{i + 1}.jpg" for i in range(template_of.size)],
                                               template_of, media_of, pairs, labels))
    erc_of = CRFIQAERC(comparisons.similarity(features), comparisons.mated)
    pair_quality_ = comparisons.quality(image_quality, "higher_is_better")
    np.testing.assert_array_equal(pair_quality_, quality)
    for fmr in CRFIQA_FMRS:
        result = erc_of(pair_quality_, fmr=fmr)
        fnmrs, thresholds, auc = reference[fmr]
        np.testing.assert_allclose(result.fnmr, fnmrs, rtol=0, atol=1e-12)
        assert result.auc == pytest.approx(auc, rel=0, abs=1e-12)
        # the benchmark's template similarities are float32, CR-FIQA's float64 of float32 features
        np.testing.assert_allclose(result.thresholds, thresholds, rtol=0, atol=1e-6)


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
