"""Evaluation report: Spearman, shared thresholds, references, ranked tables and plots."""
import math

import numpy as np
import pytest

from grafiqs.evaluation.edc import edc, random_order_edc
from grafiqs.evaluation.report import (
    RANDOM,
    SEVERITY,
    PairSet,
    average_ranks,
    evaluate_orders,
    plot_edcs,
    spearman,
    table_rows,
    write_table,
)
from grafiqs.synthetic.drawn_set import LabelledImages


def test_spearman_with_ties_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 5, 50).astype(float)
        b = a + rng.normal(0, 2, 50).round()
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        np.testing.assert_allclose(average_ranks(a), stats.rankdata(a))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _toy_set(n_ids=30, probes=6, seed=0):
    """Per-image 'severity' drives how far a probe's embedding drifts from its identity."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, 16))
    identity, enrol, severity, emb = [], [], [], []
    for i in range(n_ids):
        identity.append(i), enrol.append(True), severity.append(0), emb.append(centres[i] + rng.normal(0, 0.2, 16))
        for p in range(probes):
            s = p % 4
            identity.append(i), enrol.append(False), severity.append(s)
            emb.append(centres[i] + rng.normal(0, 0.3 + 0.6 * s, 16))
    labels = LabelledImages(np.array(identity), np.array(enrol), ["x"] * len(identity), np.array(severity))
    return labels, np.array(emb)


def test_orders_share_the_threshold_and_references_bracket_a_perfect_order():
    labels, embeddings = _toy_set()
    pairs = labels.pairs()
    assert pairs.mated.sum() == (~labels.enrol).sum()  # each probe once against its own enrolment
    assert len(pairs.mated) == (~labels.enrol).sum() * labels.enrol.sum()
    similarity = pairs.similarity(embeddings)
    noise = np.random.default_rng(1).random(len(labels.severity))
    results = {r.name: r for r in evaluate_orders(similarity, pairs, {"oracle": (labels.severity, "lower_is_better"),
                                                                      "noise": (noise, "higher_is_better")},
                                                  fmrs=(1e-2,), severity=labels.severity)}
    assert set(results) == {"oracle", "noise", RANDOM, SEVERITY}
    thresholds = {r.curves[1e-2].threshold for r in results.values()}
    assert len(thresholds) == 1
    expected = edc(similarity, pairs.mated, pairs.quality(labels.severity, "lower_is_better"), fmr=1e-2)
    np.testing.assert_array_equal(results["oracle"].curves[1e-2].fnmr, expected.fnmr)
    np.testing.assert_array_equal(results[RANDOM].curves[1e-2].fnmr,
                                  random_order_edc(similarity, pairs.mated, expected.threshold).fnmr)
    assert results["oracle"].spearman_severity == pytest.approx(1.0)
    oracle, random_ = results["oracle"].pauc(1e-2, 0.3).normalised, results[RANDOM].pauc(1e-2, 0.3).normalised
    assert oracle < random_ - 0.1 and 0.85 < random_ < 1.15
    assert results[SEVERITY].pauc(1e-2, 0.3).normalised < oracle + 0.05  # ties broken at random within a level


def test_table_is_ranked_and_written(tmp_path):
    labels, embeddings = _toy_set(seed=3)
    pairs = labels.pairs()
    similarity = pairs.similarity(embeddings)
    results = evaluate_orders(similarity, pairs, {"oracle": (labels.severity, "lower_is_better"),
                                                  "reversed": (-labels.severity, "lower_is_better")},
                              fmrs=(1e-2, 1e-3), severity=labels.severity)
    header, rows = table_rows(results, (1e-2, 1e-3), (0.2, 0.3))
    key = header.index("pauc_norm@fmr1e-2,discard0.3")
    assert [r[key] for r in rows] == sorted(r[key] for r in rows)
    ranked = [r[0] for r in rows]
    assert ranked[0] in ("oracle", SEVERITY) and ranked.index("oracle") < ranked.index(RANDOM)
    assert rows[ranked.index("reversed")][header.index("spearman_severity")] == pytest.approx(-1.0)
    csv_path, md_path = write_table(header, rows, tmp_path)
    assert len(csv_path.read_text().splitlines()) == 1 + 4
    assert md_path.read_text().count("\n") == 2 + 4 and "reference: random" in md_path.read_text()
    png = plot_edcs(results, 1e-2, tmp_path / "edc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pair_quality_is_that_of_the_worse_image():
    pairs = PairSet(np.array([0, 1]), np.array([2, 2]), np.array([True, False]))
    magnitudes = np.array([1.0, 5.0, 3.0])  # larger = worse
    np.testing.assert_array_equal(pairs.quality(magnitudes, "lower_is_better"), [-3.0, -5.0])
