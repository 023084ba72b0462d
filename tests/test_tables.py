"""Comparison tables of FIQA methods x evaluation sets: pivot, best marks, writers and the EDC grid."""
import csv
import math

import numpy as np
import pytest

from grafiqs.errors import InputError
from grafiqs.evaluation.edc import edc_for_order, random_order_edc, threshold_at_fmr
from grafiqs.evaluation.tables import (
    comparison_table,
    edc_grid_figure,
    latex_escape,
    plot_edc_grid,
    to_csv_rows,
    to_latex,
    to_markdown,
    write_comparison_tables,
)

NAN = math.nan


def record(method, set_name, norm, model="r50", fmr=1e-3, limit=0.3, **extra):
    return {"model": model, "set": set_name, "method": method, "fmr": fmr, "limit": limit, "fnmr0": 0.05,
            "pauc_norm": norm, "pauc_raw": norm * 0.015, "pauc_minus_best": norm * 0.01, **extra}


def records():
    """Two methods and two references on three sets; "reference: known severity" is lowest everywhere."""
    return [
        record("GraFIQs", "lfw", 0.80), record("GraFIQs", "agedb", 0.70), record("GraFIQs", "cfp", 0.60),
        record("CR-FIQA", "lfw", 0.80), record("CR-FIQA", "agedb", 0.90), record("CR-FIQA", "cfp", 0.50),
        record("reference: random", "lfw", 1.00), record("reference: random", "agedb", 1.02),
        record("reference: random", "cfp", 0.99),
        record("reference: known severity", "lfw", 0.20), record("reference: known severity", "agedb", 0.30),
        record("reference: known severity", "cfp", 0.10),
    ]


def test_values_and_mean_land_in_their_cells():
    table = comparison_table(records(), "r50", 1e-3, 0.3)
    assert table.sets == ["lfw", "agedb", "cfp"]
    assert table.methods == ["GraFIQs", "CR-FIQA", "reference: random", "reference: known severity"]
    assert table.values.shape == (4, 4)
    np.testing.assert_allclose(table.values[0], [0.80, 0.70, 0.60, 0.70])
    np.testing.assert_allclose(table.values[1], [0.80, 0.90, 0.50, 2.2 / 3])
    raw = comparison_table(records(), "r50", 1e-3, 0.3, metric="pauc_raw")
    assert raw.values[1, 1] == pytest.approx(0.90 * 0.015)


def test_methods_keep_first_appearance_with_references_after_them():
    rows = [record("reference: random", "lfw", 1.0), record("B", "lfw", 0.5), record("A", "lfw", 0.6)]
    assert comparison_table(rows, "r50", 1e-3, 0.3).methods == ["B", "A", "reference: random"]


def test_missing_set_or_nan_value_makes_the_mean_nan():
    rows = [r for r in records() if not (r["method"] == "CR-FIQA" and r["set"] == "cfp")]
    rows[0] = {**rows[0], "pauc_norm": NAN}  # GraFIQs on lfw
    table = comparison_table(rows, "r50", 1e-3, 0.3)
    assert math.isnan(table.values[1, 2]) and math.isnan(table.values[1, 3])
    assert math.isnan(table.values[0, 0]) and math.isnan(table.values[0, 3])
    assert table.values[0, 1] == pytest.approx(0.70)
    # lfw: only CR-FIQA is finite among the methods; mean: no method has one, so no best
    assert table.best[:, 0].tolist() == [False, True, False, False]
    assert not table.best[:, 3].any()
    header, csv_rows = to_csv_rows(table)
    assert header == ["method", "lfw", "agedb", "cfp", "mean"]
    assert csv_rows[1] == ["CR-FIQA", "0.8", "0.9", "", ""]
    assert "| CR-FIQA | **0.800** | 0.900 | – | – |" in to_markdown(table)
    assert r"CR-FIQA & \textbf{0.800} & 0.900 & -- & -- \\" in to_latex(table)


def test_references_are_never_best_and_ties_are_all_marked():
    table = comparison_table(records(), "r50", 1e-3, 0.3)
    # columns: lfw (tie 0.80), agedb (GraFIQs), cfp (CR-FIQA), mean (GraFIQs 0.70 < 0.733)
    assert table.best.tolist() == [[True, True, False, True], [True, False, True, False],
                                   [False] * 4, [False] * 4]
    markdown = to_markdown(table)
    assert "| GraFIQs | **0.800** | **0.700** | 0.600 | **0.700** |" in markdown
    assert "| CR-FIQA | **0.800** | 0.900 | **0.500** | 0.733 |" in markdown
    assert "| reference: known severity | 0.200 | 0.300 | 0.100 | 0.200 |" in markdown
    assert "lower is better" in markdown.splitlines()[0] and "r50, pAUC@FMR=1e-3, discard 0.3" in markdown
    latex = to_latex(table)
    assert r"GraFIQs & \textbf{0.800} & \textbf{0.700} & 0.600 & \textbf{0.700} \\" in latex
    assert r"CR-FIQA & \textbf{0.800} & 0.900 & \textbf{0.500} & 0.733 \\" in latex
    body = latex.splitlines()
    assert body.index(r"\midrule", body.index(r"CR-FIQA & \textbf{0.800} & 0.900 & \textbf{0.500} & 0.733 \\")) == \
        body.index(r"reference: random & 1.000 & 1.020 & 0.990 & 1.003 \\") - 1
    assert body.count(r"\midrule") == 2 and r"\toprule" in body and r"\bottomrule" in body


def test_ties_within_tolerance_are_marked():
    rows = [record("A", "lfw", 0.5), record("B", "lfw", 0.5 + 1e-13), record("C", "lfw", 0.5 + 1e-9)]
    assert comparison_table(rows, "r50", 1e-3, 0.3).best[:, 0].tolist() == [True, True, False]


def test_names_are_escaped():
    assert latex_escape(r"a_b & c% $#{}~^\x") == \
        r"a\_b \& c\% \$\#\{\}\textasciitilde{}\textasciicircum{}\textbackslash{}x"
    rows = [record("a_b & c%", "set|1", 0.5), record("reference: random", "set|1", 1.0)]
    table = comparison_table(rows, "r50", 1e-3, 0.3)
    assert r"a\_b \& c\% & \textbf{0.500} & \textbf{0.500} \\" in to_latex(table)
    assert r"Method & set|1 & Mean \\" in to_latex(table)
    assert "| method | set\\|1 | mean |" in to_markdown(table)


def test_bad_input_is_refused():
    with pytest.raises(InputError, match="metric"):
        comparison_table(records(), "r50", 1e-3, 0.3, metric="auc")
    with pytest.raises(InputError, match="no benchmark records"):
        comparison_table(records(), "r100", 1e-3, 0.3)
    with pytest.raises(InputError, match="two records"):
        comparison_table(records() + [record("GraFIQs", "lfw", 0.1)], "r50", 1e-3, 0.3)
    with pytest.raises(InputError, match="lacks pauc_raw"):
        comparison_table([{k: v for k, v in record("A", "lfw", 0.5).items() if k != "pauc_raw"}], "r50", 1e-3, 0.3)


def test_write_comparison_tables_names_files_and_round_trips_the_long_csv(tmp_path):
    rows = records() + [record("GraFIQs", "lfw", 0.75, limit=0.2, erc_auc=0.0123456789012345),
                        record("GraFIQs", "lfw", 0.9, model="ada/face r100", fmr=1e-4, erc_auc=NAN)]
    paths = write_comparison_tables(rows, tmp_path, metrics=("pauc_norm", "pauc_raw"))
    stems = ["r50_fmr1e-3_discard0.2", "r50_fmr1e-3_discard0.3", "ada_face_r100_fmr1e-4_discard0.3"]
    expected = [tmp_path / "tables" / f"{stem}_{metric}{suffix}"
                for stem in stems for metric in ("pauc_norm", "pauc_raw") for suffix in (".csv", ".md", ".tex")]
    assert paths["tables"] == expected
    assert sorted((tmp_path / "tables").iterdir()) == sorted(expected)
    assert paths["markdown"] == tmp_path / "tables.md" and paths["latex"] == tmp_path / "tables.tex"

    with open(tmp_path / "tables" / "r50_fmr1e-3_discard0.3_pauc_norm.csv", newline="") as file:
        table_csv = list(csv.reader(file))
    assert table_csv[0] == ["method", "lfw", "agedb", "cfp", "mean"]
    assert table_csv[1] == ["GraFIQs", "0.8", "0.7", "0.6", "0.7"]
    # discard 0.2 has only GraFIQs on lfw: every other cell, and so every mean, is empty
    with open(tmp_path / "tables" / "r50_fmr1e-3_discard0.2_pauc_norm.csv", newline="") as file:
        assert list(csv.reader(file))[1] == ["GraFIQs", "0.75", "", "", ""]

    markdown = paths["markdown"].read_text()
    assert markdown.count("\n## ") == 6 and "## ada/face r100, FMR 1e-4, discard 0.3, pauc_raw" in markdown
    assert markdown.count("| GraFIQs | **0.800** | **0.700** | 0.600 | **0.700** |") == 1
    latex = paths["latex"].read_text()
    assert latex.count(r"\begin{tabular}") == 6 == latex.count(r"\caption{")
    assert r"\caption{ada/face r100, pAUC@FMR=1e-4" in latex

    with open(paths["long"], newline="") as file:
        long = list(csv.DictReader(file))
    assert list(long[0]) == ["model", "set", "method", "fmr", "limit", "fnmr0", "pauc_norm", "pauc_raw",
                             "pauc_minus_best", "erc_auc"]
    assert len(long) == len(rows)
    for written, original in zip(long, rows):
        assert [written[k] for k in ("model", "set", "method")] == [original[k] for k in ("model", "set", "method")]
        for key in ("fmr", "limit", "fnmr0", "pauc_norm", "pauc_raw", "pauc_minus_best"):
            assert float(written[key]) == original[key]  # exact, not approximate
    assert [row["erc_auc"] for row in long[-3:]] == ["", "0.0123456789012345", ""]


def test_write_comparison_tables_refuses_models_that_share_a_file_name(tmp_path):
    with pytest.raises(InputError, match="same file name"):
        write_comparison_tables([record("A", "lfw", 0.5, model="a b"), record("A", "lfw", 0.5, model="a/b")],
                                tmp_path)


def _curves():
    """Real EDCs on small random data: per set, a FIQA that knows the noise, a blind one and random order."""
    curves = {}
    for index, set_name in enumerate(["lfw", "agedb", "cfp", "calfw", "cplfw"]):
        rng = np.random.default_rng(index)
        mated = rng.random(600) < 0.5
        noise = rng.random(600)
        scores = np.where(mated, 0.6 - 0.6 * noise, 0.0) + rng.normal(0, 0.1, 600)
        threshold = threshold_at_fmr(scores, mated, 1e-2)
        curves[set_name, "oracle"] = edc_for_order(scores, mated, -noise, threshold)
        if set_name != "cfp":  # a missing curve is skipped
            curves[set_name, "blind"] = edc_for_order(scores, mated, rng.random(600), threshold)
        curves[set_name, "reference: random"] = random_order_edc(scores, mated, threshold, seed=index)
    return curves


def test_edc_grid_has_one_subplot_per_set_and_consistent_styles(tmp_path):
    from PIL import Image

    curves = _curves()
    sets = ["lfw", "agedb", "cfp", "calfw", "cplfw"]
    methods = ["oracle", "blind", "reference: random"]
    assert curves["lfw", "oracle"].pauc(0.3).normalised < curves["lfw", "reference: random"].pauc(0.3).normalised

    figure = edc_grid_figure(curves, sets, methods, 1e-2, limit=0.3)
    assert [axis.get_title() for axis in figure.axes] == sets  # 2 x 4 grid, the 3 unused cells removed
    for axis in figure.axes:
        step_lines = [line for line in axis.get_lines() if line.get_label() in methods]
        assert [line.get_label() for line in step_lines] == \
            (["oracle", "reference: random"] if axis.get_title() == "cfp" else methods)
        assert {line.get_label(): line.get_linestyle() for line in step_lines}["reference: random"] == "--"
        shown = max(float(line.get_ydata()[np.asarray(line.get_xdata()) <= 0.5].max()) for line in step_lines)
        assert axis.get_xlim() == (0, 0.5) and axis.get_ylim() == pytest.approx((0, shown * 1.05))
        assert any(tuple(line.get_xdata()) == (0.3, 0.3) for line in axis.get_lines())  # the limit line
    colours = {(line.get_label(), tuple(line.get_color())) for axis in figure.axes for line in axis.get_lines()
               if line.get_label() in methods}
    assert len(colours) == len(methods)  # one colour per method, the same in every subplot
    assert [text.get_text() for text in figure.legends[0].get_texts()] == methods

    path = plot_edc_grid(curves, sets, methods, 1e-2, tmp_path / "plots" / "grid.png", title="EDCs")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == (4 * 360 + 320, 2 * 280 + 80)  # four columns, the legend and two rows at 100 dpi
