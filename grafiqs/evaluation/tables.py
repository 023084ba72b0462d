"""The comparison tables FIQA papers publish: methods as rows, evaluation sets as columns.

A benchmark run yields long-form records, one per (FR model, evaluation set, FIQA method,
target FMR, discard limit). This module pivots them into one table per model x FMR x limit x
metric, with the mean over sets as the last column and the best method of each column marked,
and writes each table as CSV (every digit a script needs), markdown (a README) and LaTeX
(booktabs, ready for a paper). Every metric here is a pAUC, so lower is better. Methods named
"reference: ..." (random discarding, known severity) are shown for scale but never marked
best: they are bounds, not competitors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from grafiqs.io.atomic import atomic_write_text, atomic_write_with
from grafiqs.io.score_files import safe_file_name, write_csv
from grafiqs.errors import InputError
from grafiqs.evaluation.edc import EDCResult
from grafiqs.evaluation.report import _fmr_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS = ("pauc_norm", "pauc_raw", "pauc_minus_best")
LONG_COLUMNS = ("model", "set", "method", "fmr", "limit", "fnmr0", "pauc_norm", "pauc_raw", "pauc_minus_best",
                "erc_auc")
REQUIRED_KEYS = LONG_COLUMNS[:-1]  # erc_auc is optional
TIE_TOLERANCE = 1e-12

_METRIC_TITLES = {
    "pauc_norm": "normalised: pAUC / (FNMR(0) x limit), 1.0 = FNMR stays at FNMR(0), "
                 "as random discarding keeps it on average; lower is better",
    "pauc_raw": "raw: area under the EDC up to the discard limit; lower is better",
    "pauc_minus_best": "minus the theoretical best area (0 = every discarded comparison was an error); "
                       "lower is better",
}
_LATEX_SPECIALS = {
    "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
}


def is_reference(method: str) -> bool:
    """References (random, known severity) bound the scale; they are never ranked against the methods."""
    return method.startswith("reference:")


@dataclass
class ComparisonTable:
    """One metric of every method on every set, for one FR model, FMR and discard limit.

    `values` has one row per method and one column per set plus the mean over sets last;
    `best` marks, per column, the lowest non-reference value (ties all marked).
    """

    model: str
    fmr: float
    limit: float
    metric: str
    methods: list[str]  # non-references first, then references, each in order of first appearance
    sets: list[str]
    values: np.ndarray  # [methods, sets + 1], NaN where there is no record or no value
    best: np.ndarray  # bool, same shape

    @property
    def title(self) -> str:
        return f"{self.model}, pAUC@FMR={_fmr_label(self.fmr)}, discard {self.limit:g}, {_METRIC_TITLES[self.metric]}"

    @property
    def references(self) -> np.ndarray:
        return np.array([is_reference(m) for m in self.methods], dtype=bool)


def _validated(records: Iterable[Mapping]) -> list[Mapping]:
    records = list(records)
    for record in records:
        missing = [key for key in REQUIRED_KEYS if key not in record]
        if missing:
            raise InputError(f"a benchmark record lacks {', '.join(missing)}: {dict(record)}")
    return records


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))


def comparison_table(records: Iterable[Mapping], model: str, fmr: float, limit: float,
                     metric: str = "pauc_norm") -> ComparisonTable:
    """Pivot the records of `model` at `fmr` and `limit` into methods x sets.

    Rows and columns come from all of the model's records (any FMR or limit), so every table of a
    model has the same layout and a method or set missing at one FMR shows up as NaN there.
    The mean is NaN when any set of its row is: a mean over fewer sets would not be comparable.
    """
    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}, got {metric!r}")
    of_model = [r for r in _validated(records) if r["model"] == model]
    if not of_model:
        raise InputError(f"no benchmark records for FR model {model!r}")
    methods = _unique(r["method"] for r in of_model)
    methods = [m for m in methods if not is_reference(m)] + [m for m in methods if is_reference(m)]
    sets = _unique(r["set"] for r in of_model)
    row, column = {m: i for i, m in enumerate(methods)}, {s: j for j, s in enumerate(sets)}

    values = np.full((len(methods), len(sets) + 1), np.nan)
    filled = np.zeros(values.shape, dtype=bool)
    for r in of_model:
        if r["fmr"] == fmr and r["limit"] == limit:
            i, j = row[r["method"]], column[r["set"]]
            if filled[i, j]:
                raise InputError(f"two records for {model!r}, set {r['set']!r}, method {r['method']!r}, "
                                 f"FMR {fmr:g}, discard {limit:g}: which one is meant is unclear")
            filled[i, j] = True
            values[i, j] = float(r[metric])
    values[:, -1] = values[:, :-1].mean(axis=1)

    reference = np.array([is_reference(m) for m in methods], dtype=bool)
    candidates = np.where(~reference[:, None] & np.isfinite(values), values, np.inf)
    lowest = candidates.min(axis=0)
    best = np.isfinite(lowest) & (candidates <= lowest + TIE_TOLERANCE)
    return ComparisonTable(model, fmr, limit, metric, methods, sets, values, best)


# ---------------------------------------------------------------------------- one table


def to_csv_rows(table: ComparisonTable) -> tuple[list[str], list[list[str]]]:
    """Header and rows for `write_csv`: `%.6g` numbers, NaN as an empty cell, best not marked."""
    header = ["method", *table.sets, "mean"]
    rows = [[method, *("" if math.isnan(v) else f"{v:.6g}" for v in values)]
            for method, values in zip(table.methods, table.values)]
    return header, rows


def _cells(table: ComparisonTable, missing: str, bold: str) -> list[list[str]]:
    """The numbers with 3 decimals, `missing` for NaN and the best formatted by `bold`."""
    return [[missing if math.isnan(v) else bold.format(f"{v:.3f}") if best else f"{v:.3f}"
             for v, best in zip(values, bests)]
            for values, bests in zip(table.values, table.best)]


def _footnote(missing: str) -> str:
    return (f"Mean over all sets; {missing} where a set has no value, since a mean over fewer sets would not be "
            "comparable. Bold: the lowest value of each column among the methods (references excluded, ties all bold).")


# Short, as a long last row would widen the table; the full footnote is a comment above the tabular.
_LATEX_NOTE = "Mean over all sets (-- if any is missing). Bold: best method, references excluded."


def to_markdown(table: ComparisonTable) -> str:
    """A bold title line, the table (best in bold, NaN as –) and the footnote on the mean."""
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"**{table.title}**", "", "| " + " | ".join(["method", *map(escape, table.sets), "mean"]) + " |",
             "|---|" + "---:|" * (len(table.sets) + 1)]
    for method, cells in zip(table.methods, _cells(table, "–", "**{}**")):
        lines.append("| " + " | ".join([escape(method), *cells]) + " |")
    return "\n".join([*lines, "", _footnote("–")]) + "\n"


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped, one character at a time (so `\\` is not escaped twice)."""
    return "".join(_LATEX_SPECIALS.get(c, c) for c in text)


def to_latex(table: ComparisonTable) -> str:
    """A booktabs `tabular` (best as \\textbf, NaN as --, references below a \\midrule), title as a comment."""
    columns = len(table.sets) + 2
    lines = [f"% {table.title}", f"% {_footnote('--')}", rf"\begin{{tabular}}{{l{'r' * (columns - 1)}}}", r"\toprule",
             " & ".join(["Method", *map(latex_escape, table.sets), "Mean"]) + r" \\", r"\midrule"]
    previous_was_method = False
    for method, reference, cells in zip(table.methods, table.references, _cells(table, "--", r"\textbf{{{}}}")):
        if reference and previous_was_method:
            lines.append(r"\midrule")
        lines.append(" & ".join([latex_escape(method), *cells]) + r" \\")
        previous_was_method = not reference
    lines += [r"\bottomrule",
              rf"\multicolumn{{{columns}}}{{l}}{{\footnotesize {_LATEX_NOTE}}} \\",
              r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- all tables


def table_stem(model: str, fmr: float, limit: float, metric: str) -> str:
    """The file name of one table without its extension (not a Path: "0.3_..." is no suffix)."""
    return f"{safe_file_name(model)}_fmr{_fmr_label(fmr)}_discard{limit:g}_{metric}"


def comparison_table_names(models: Sequence[str], fmrs: Sequence[float], limits: Sequence[float],
                           metrics: Sequence[str]) -> set[str]:
    """The paths, relative to the output folder, that `write_comparison_tables` writes for these tables."""
    return {f"tables/{table_stem(model, fmr, limit, metric)}.{ext}" for model in models for fmr in fmrs
            for limit in limits for metric in metrics for ext in ("csv", "md", "tex")}


def _long_cell(value) -> str:
    """Floats as repr (an exact round trip), NaN and absent values empty, anything else as str."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def write_comparison_tables(records: Iterable[Mapping], out_dir: Path,
                            metrics: Sequence[str] = ("pauc_norm",)) -> dict:
    """Every table of every model x FMR x limit x metric in `records`, plus the long-form records.

    Writes `tables/<model>_fmr<fmr>_discard<limit>_<metric>.{csv,md,tex}`, all markdown tables in
    `tables.md`, all LaTeX tables (each in a `table` float with its title as caption) in `tables.tex`
    and every record in `results_long.csv`. Returns {"long", "markdown", "latex": path, "tables": [paths]}.
    """
    records = _validated(records)
    out_dir = Path(out_dir)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    models = _unique(r["model"] for r in records)
    keys = sorted(_unique((r["model"], r["fmr"], r["limit"]) for r in records),
                  key=lambda key: (models.index(key[0]), key[1], key[2]))

    paths, markdown, latex = [], ["# FIQA comparison tables\n"], []
    written_models: dict[str, str] = {}
    for model, fmr, limit in keys:
        safe = safe_file_name(model)
        if written_models.setdefault(safe, model) != model:
            raise InputError(f"FR models {written_models[safe]!r} and {model!r} give the same file name {safe!r}; "
                             "rename one")
        for metric in metrics:
            table = comparison_table(records, model, fmr, limit, metric)
            stem = table_stem(model, fmr, limit, metric)
            csv_path, md_path, tex_path = (out_dir / "tables" / f"{stem}.{ext}" for ext in ("csv", "md", "tex"))
            write_csv(csv_path, *to_csv_rows(table))
            atomic_write_text(md_path, to_markdown(table))
            atomic_write_text(tex_path, to_latex(table))
            paths += [csv_path, md_path, tex_path]
            markdown.append(f"## {model}, FMR {_fmr_label(fmr)}, discard {limit:g}, {metric}\n\n{to_markdown(table)}")
            latex.append("\\begin{table}[ht]\n\\centering\n" + to_latex(table)
                         + f"\\caption{{{latex_escape(table.title)}}}\n\\end{{table}}\n")

    extra = sorted({key for r in records for key in r} - set(LONG_COLUMNS))
    columns = [*LONG_COLUMNS, *extra]
    long_path = out_dir / "results_long.csv"
    write_csv(long_path, columns, ([_long_cell(r.get(c)) for c in columns] for r in records))
    markdown_path, latex_path = out_dir / "tables.md", out_dir / "tables.tex"
    atomic_write_text(markdown_path, "\n".join(markdown))
    atomic_write_text(latex_path, "\n".join(latex))
    return {"long": long_path, "markdown": markdown_path, "latex": latex_path, "tables": paths}


# ---------------------------------------------------------------------------- EDC grid


def edc_grid_figure(curves: Mapping[tuple[str, str], EDCResult], sets: Sequence[str], methods: Sequence[str],
                    fmr: float, limit: float = 0.3, title: str = "", max_discard: float = 0.5) -> Figure:
    """One EDC subplot per set (up to 4 per row), one colour per method in every subplot, one legend.

    Returned rather than saved so a notebook can show it; `plot_edc_grid` saves it.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: works headless and leaves a notebook's backend alone

    if not sets:
        raise InputError("an EDC grid needs at least one evaluation set")
    columns = min(4, len(sets))
    rows = math.ceil(len(sets) / columns)
    # room right of the plots for the legend, and height for one legend line per method
    figure = Figure(figsize=(3.6 * columns + 3.2, max(2.8 * rows + 0.8, 0.22 * len(methods) + 1.0)), dpi=100,
                    layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes[len(sets):]:
        axis.remove()
    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    colours = {method: palette(i % palette.N) for i, method in enumerate(methods)}
    legend: dict[str, object] = {}
    for axis, set_name in zip(axes, sets):
        shown_top = 0.0
        for method in methods:
            curve = curves.get((set_name, method))
            if curve is None:
                continue
            shown_top = max(shown_top, float(curve.fnmr[curve.discard <= max_discard].max()))
            (line,) = axis.step(curve.discard, curve.fnmr, where="post", color=colours[method], linewidth=1.2,
                                linestyle="--" if is_reference(method) else "-", label=method)
            legend.setdefault(method, line)
        axis.axvline(limit, color="gray", linewidth=0.8, linestyle=":")
        axis.set_xlim(0, max_discard)
        axis.set_ylim(0, max(shown_top, 1e-3) * 1.05)  # past max_discard, tiny kept sets swing FNMR up to 1
        axis.set_title(set_name, fontsize=10)
        axis.grid(alpha=0.3)
    figure.supxlabel("share of mated comparisons discarded (lowest quality first)", fontsize=9)
    figure.supylabel(f"FNMR at fixed threshold (FMR {_fmr_label(fmr)})", fontsize=9)
    figure.suptitle(title or f"EDCs at FMR {_fmr_label(fmr)}, dotted: pAUC limit {limit:g}", fontsize=11)
    figure.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize=8)
    return figure


def plot_edc_grid(curves: Mapping[tuple[str, str], EDCResult], sets: Sequence[str], methods: Sequence[str],
                  fmr: float, path: Path, limit: float = 0.3, title: str = "") -> Path:
    """`edc_grid_figure` saved as a PNG at `path` (folders created); missing (set, method) curves are skipped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = edc_grid_figure(curves, sets, methods, fmr, limit, title)
    atomic_write_with(path, lambda file: figure.savefig(file, format="png"))
    return path
