"""Curating a RecordIO training set by GraFIQs scores: `curate.py`.

    python curate.py --input faces_emore/ --scores scores/ --output_dir curated/ --threshold 120 --min_images 5
    python curate.py --config configs/curation/filtered.yaml

Reads one or more score runs of `score.py --image-path <RecordIO set>` (their `scores.csv`: the `path` names
`<shard>.rec#<key>` and the `label` column), applies the rules in this order, each to what the previous one left,

1. images whose magnitude is not finite (NaN: the status column says why) are removed; the status's face-check
   flag (`not an aligned face?`) is not a rule here (on aligned training crops it flags what the rules judge);
2. `threshold`: a global cut on the raw magnitude of `group` (larger = lower quality): images above it go;
3. `best_k` / `best_fraction`: per identity, only the K images with the smallest magnitude, or the best
   ceil(fraction x n) of its n images left (both given: the smaller); ties go to the earlier record;
4. `min_images`: identities with fewer images left are dropped whole;

and writes a new insightface RecordIO set into `output_dir`: `train.rec`, `train.idx`, `property`, the kept
records' payloads copied byte for byte except their label (the identities left relabelled 0..C-1 in the order of
their old labels; extra IRHeader labels are kept), with the header record 0 and one identity-range record per
class (as insightface's sets and `write_recordio`) when the input has a header, plain records 0..n-1 when not.
Beside it: `identities.csv` (per old label: records, scored, kept, removed and why, the new label), `images.csv`
(per scored image: its name, label, magnitude and `kept` or the rule that removed it),
`histogram.png` (the magnitudes of kept and removed images, the threshold marked) and `summary.json`.

Records of the input that no score run holds (unreadable records listed in errors.csv, shards not scored) are
not kept: they count as `not_scored` in the report. The input is only read: an `output_dir` holding one of its
shards is refused, and every output file is written through the folder's ledger (grafiqs.io.ledger), so no file
the program did not write is ever replaced. Each record copied is checked against the label its scores.csv row
holds: a container changed since it was scored stops the run (exit 2) instead of mixing.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from grafiqs.errors import InputError

SCORES = "scores.csv"
REPORT, DECISIONS, HISTOGRAM, SUMMARY = "identities.csv", "images.csv", "histogram.png", "summary.json"
CONFIG_FILE_LIMIT = 64 * 2**20
GROUPS = ("image", "block1", "block2", "block3", "block4")
# why an image is not kept (the report's columns), in the order the rules apply
KEPT, NOT_FINITE, ABOVE_THRESHOLD, NOT_AMONG_BEST, IDENTITY_TOO_SMALL = range(5)
REASONS = {NOT_FINITE: "not_finite", ABOVE_THRESHOLD: "above_threshold", NOT_AMONG_BEST: "not_among_best",
           IDENTITY_TOO_SMALL: "identity_too_small"}
EXIT_CODES = ("exit codes: 0 done; 2 bad config or input (checked before anything is created), or a container "
              "changed since it was scored; 4 cannot write; 130 Ctrl-C; 143 SIGTERM")


@dataclass
class CurationConfig:
    """What to curate and by which rules.

    input: the RecordIO set that was scored (score.py's --image-path: the folder holding train.rec, a .rec file, or
    a folder of .rec shards); scores: score run folders (or their scores.csv files) of that set, several for runs
    over parts of it (one per shard); output_dir: the new set's folder (not the input's); group: the magnitude
    column the rules read (image, block1..block4); threshold: keep magnitudes <= threshold; best_k, best_fraction:
    per identity, the best K or the best fraction of its images left; min_images: drop identities with fewer
    images left; bins: bars of the histogram."""

    input: str
    scores: Union[list[str], str]
    output_dir: str
    group: str = "image"
    threshold: Optional[float] = None
    best_k: Optional[int] = None
    best_fraction: Optional[float] = None
    min_images: int = 1
    bins: int = 60

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise InputError(f"group must be one of {', '.join(GROUPS)}, got {self.group!r}")
        if isinstance(self.scores, (str, os.PathLike)):
            self.scores = [str(self.scores)]  # one run: --scores run/ (several: --scores '[run_0, run_1]')
        if not self.scores:
            raise InputError("scores is empty; give the score run folder(s) of the input set")
        for key in ("input", "output_dir"):
            if not getattr(self, key):
                raise InputError(f"{key} is empty; give a folder path")
        if self.threshold is not None and not (_number(self.threshold) and math.isfinite(self.threshold)
                                               and self.threshold > 0):
            raise InputError(f"threshold must be a finite magnitude > 0, got {self.threshold!r}")
        for key, least in (("best_k", 1), ("min_images", 1), ("bins", 1)):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not least <= value <= 2**31):
                raise InputError(f"{key} must be a whole number from {least} to {2**31}, got {value!r}")
        if self.best_fraction is not None and not (_number(self.best_fraction) and 0 < self.best_fraction <= 1):
            raise InputError(f"best_fraction must lie in (0, 1], got {self.best_fraction!r}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- the rules


def select(labels: np.ndarray, magnitudes: np.ndarray, threshold: float | None = None, best_k: int | None = None,
           best_fraction: float | None = None, min_images: int = 1) -> np.ndarray:
    """Per image, KEPT or the first rule that removes it (NOT_FINITE, ABOVE_THRESHOLD, NOT_AMONG_BEST,
    IDENTITY_TOO_SMALL); ties between equal magnitudes go to the earlier image (the arrays' order)."""
    labels, magnitudes = np.asarray(labels, dtype=np.int64), np.asarray(magnitudes, dtype=np.float64)
    reason = np.zeros(len(labels), dtype=np.int8)
    finite = np.isfinite(magnitudes)
    reason[~finite] = NOT_FINITE
    if threshold is not None:
        reason[finite & (magnitudes > threshold)] = ABOVE_THRESHOLD
    if best_k is not None or best_fraction is not None:
        alive = np.flatnonzero(reason == KEPT)
        order = alive[np.lexsort((alive, magnitudes[alive], labels[alive]))]  # per label, best first
        grouped = labels[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if len(order) else np.zeros(0, np.int64)
        counts = np.diff(np.r_[starts, len(order)])
        allowed = np.full(len(counts), np.iinfo(np.int64).max)
        if best_k is not None:
            allowed = np.minimum(allowed, best_k)
        if best_fraction is not None:  # ceil, robust to 0.3 * 10 = 3.0000000000000004
            allowed = np.minimum(allowed, np.ceil(np.round(best_fraction * counts, 9)).astype(np.int64))
        rank = np.arange(len(order)) - np.repeat(starts, counts)
        reason[order[rank >= np.repeat(allowed, counts)]] = NOT_AMONG_BEST
    if min_images > 1:
        alive = np.flatnonzero(reason == KEPT)
        _, inverse, counts = np.unique(labels[alive], return_inverse=True, return_counts=True)
        reason[alive[counts[inverse] < min_images]] = IDENTITY_TOO_SMALL
    return reason


# --------------------------------------------------------------------------- reading the score runs


@dataclass
class ScoredRecords:
    """The scored records of a container, sorted by (shard, key): the rows of the score runs' scores.csv."""

    shard: np.ndarray  # index into the container's shards (in their order)
    key: np.ndarray
    label: np.ndarray
    magnitude: np.ndarray  # NaN where the scores are not finite


def score_file(source: str | Path) -> Path:
    """A score run's scores.csv: `source` itself, or the file of that name in the folder `source`."""
    path = Path(source)
    return path / SCORES if path.is_dir() else path


def read_scores(sources: list[str], container, group: str) -> ScoredRecords:
    """Every row of the sources' scores.csv, located in `container` (by name, or by the resolved container path);
    streamed line by line. A row that names no record of the container, or a record given twice, is an error."""
    from grafiqs.data.containers import parse_name
    from grafiqs.io.reading import open_regular

    shards = list(container.shards.values())
    known: dict[str, int | None] = {s.spelled: i for i, s in enumerate(shards)}
    resolved = {os.path.realpath(s.spelled): i for i, s in enumerate(shards)}
    columns = {"shard": array("i"), "key": array("q"), "label": array("q"), "magnitude": array("d")}
    for source in sources:
        path = score_file(source)
        with open_regular(path, "scores.csv of a score run", limit=None) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            try:
                rows = csv.reader(text)
                header = next(rows, None) or []
                missing = [c for c in ("path", group, "label") if c not in header]
                if missing:
                    why = (" (scored from image files, not a RecordIO set)" if "label" in missing and "path" in header
                           else "")
                    raise InputError(f"{path}: no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}{why}; "
                                     "give the scores.csv of score.py --image-path <RecordIO set>")
                at = {c: header.index(c) for c in ("path", group, "label")}
                for number, row in enumerate(rows, start=2):
                    try:
                        name = row[at["path"]]
                        spelled, key = parse_name(name)
                        label, magnitude = int(row[at["label"]]), float(row[at[group]])
                    except (IndexError, ValueError) as error:
                        raise InputError(f"{path}:{number}: not a row of a RecordIO score run ({error})") from None
                    if spelled not in known:
                        known[spelled] = resolved.get(os.path.realpath(spelled))
                    shard = known[spelled]
                    if shard is None or not shards[shard].has_image(key):
                        raise InputError(f"{path}:{number}: {name} names no image record of --input {container_names(container)}; "
                                         "give the set these scores were computed on")
                    columns["shard"].append(shard)
                    columns["key"].append(key)
                    columns["label"].append(label)
                    columns["magnitude"].append(magnitude)  # NaN where the gradients were not finite
            except UnicodeDecodeError as error:
                raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
            except csv.Error as error:
                raise InputError(f"{path}: not a readable CSV ({error})") from None
    arrays = {name: np.frombuffer(values, dtype=values.typecode).copy() if len(values) else
              np.zeros(0, dtype=values.typecode) for name, values in columns.items()}
    order = np.lexsort((arrays["key"], arrays["shard"]))
    records = ScoredRecords(**{name: values[order] for name, values in arrays.items()})
    twice = np.flatnonzero((records.shard[1:] == records.shard[:-1]) & (records.key[1:] == records.key[:-1]))
    if len(twice):
        first = twice[0]
        raise InputError(f"record {int(records.key[first])} of {shards[records.shard[first]].spelled} is scored twice in "
                         f"{', '.join(map(str, sources))}; give each part of the set once")
    if not len(records.key):
        raise InputError(f"{', '.join(map(str, sources))}: no scored image")
    return records


def container_names(container) -> str:
    return ", ".join(container.shards)


def unscored_labels(container, records: ScoredRecords) -> tuple[np.ndarray, int]:
    """(labels of the container's image records that no score run holds, how many of them cannot be read)."""
    from grafiqs.data.recordio import RecordIOError, unpack_record

    labels, unreadable = array("q"), 0
    for index, shard in enumerate(container.shards.values()):
        for key in np.setdiff1d(shard.keys, records.key[records.shard == index]).tolist():
            try:
                labels.append(unpack_record(shard.reader.read(key), f"{shard.spelled} key {key}")[1])
            except RecordIOError:
                unreadable += 1
    return np.asarray(labels, dtype=np.int64), unreadable


# --------------------------------------------------------------------------- writing the new set


def write_training_set(folder: Path, images, counts: np.ndarray, header: bool, size: tuple[int, int]) -> None:
    """train.rec, train.idx, property in `folder`, each through grafiqs.io.atomic (the folder's ledger records them).

    `images`: (encoded image, IRHeader label: the class, or a sequence whose first entry is the class) per image,
    grouped by class 0..C-1, `counts[c]` images of class c. With `header`, insightface's layout (as
    `write_recordio`): record 0 holds [id_start, id_end], images are keys 1..n, then one record per class with
    [first key, last key + 1]; without, the images are plain records 0..n-1. Streams: one image in memory at a time.
    """
    from grafiqs.data.recordio import IDX_NAME, PROPERTY_NAME, REC_NAME, encode_record, pack_record
    from grafiqs.io.atomic import atomic_write_text, atomic_write_with

    offsets = array("q")
    total = int(np.sum(counts))

    def write_rec(file) -> None:
        position = 0

        def put(payload: bytes) -> None:
            nonlocal position
            data = encode_record(payload)
            file.write(data)
            offsets.append(position)
            position += len(data)

        first_key = 1 if header else 0
        id_start = total + first_key
        if header:
            put(pack_record(b"", [float(id_start), float(id_start + len(counts))]))
        for number, (image, labels) in enumerate(images):
            put(pack_record(image, labels, id=first_key + number))
        if len(offsets) != total + first_key:
            raise ValueError(f"write_training_set: {len(offsets) - first_key} images given, counts say {total}")
        if header:
            ends = first_key + np.cumsum(counts)
            for label, (first, end) in enumerate(zip((ends - counts).tolist(), ends.tolist())):
                put(pack_record(b"", [float(first), float(end)], id=id_start + label))

    atomic_write_with(folder / REC_NAME, write_rec)
    atomic_write_text(folder / IDX_NAME, "".join(f"{key}\t{offset}\n" for key, offset in enumerate(offsets)))
    atomic_write_text(folder / PROPERTY_NAME, f"{len(counts)},{size[0]},{size[1]}\n")


def kept_images(container, records: ScoredRecords, kept: np.ndarray, new_labels: np.ndarray):
    """(image bytes, IRHeader label) of each kept record, read from the input: the label replaced by the new one
    (extra IRHeader labels kept); a record whose label is not its scores.csv row's stops the run."""
    from grafiqs.data.recordio import RecordIOError, unpack_record

    shards = list(container.shards.values())
    for index, label in zip(kept.tolist(), new_labels.tolist()):
        shard, key = shards[records.shard[index]], int(records.key[index])
        source = f"{shard.spelled} key {key}"
        try:
            head, old, image = unpack_record(shard.reader.read(key), source)
        except RecordIOError as error:
            raise InputError(f"{error}: the container changed since it was scored; score it again") from None
        if old != records.label[index]:
            raise InputError(f"{source}: label {old}, but its scores.csv row says {int(records.label[index])}: the "
                             "container changed since it was scored; score it again")
        yield image, (float(label) if head.flag == 0 else [float(label), *head.label[1:]])


def image_size(container, records: ScoredRecords, first: int) -> tuple[int, int]:
    """(height, width) for the new `property`: the input's property file, else the first kept image's."""
    from grafiqs.data.decode import decode_image
    from grafiqs.data.recordio import PROPERTY_NAME, read_property, unpack_record

    shard = list(container.shards.values())[records.shard[first]]
    prop = Path(shard.reader.rec_path).parent / PROPERTY_NAME
    if os.path.lexists(prop):
        return read_property(prop)[1:]
    key = int(records.key[first])
    image = unpack_record(shard.reader.read(key), f"{shard.spelled} key {key}")[2]
    return decode_image(image, source=f"{shard.spelled} key {key}").shape[:2]


def write_histogram(path: Path, magnitudes: np.ndarray, kept: np.ndarray, config: CurationConfig) -> None:
    """Histogram of the finite magnitudes (log bins), kept and removed stacked, the threshold marked."""
    from matplotlib.figure import Figure  # no pyplot: headless

    from grafiqs.io.atomic import atomic_write_with

    finite = np.isfinite(magnitudes) & (magnitudes > 0)
    figure = Figure(figsize=(7, 4), dpi=110)
    axes = figure.add_subplot()
    if finite.any():
        low, high = np.log10(magnitudes[finite].min()), np.log10(magnitudes[finite].max())
        edges = np.logspace(low, high if high > low else low + 1e-3, config.bins + 1)
        axes.hist([magnitudes[finite & kept], magnitudes[finite & ~kept]], bins=edges, stacked=True,
                  color=["tab:blue", "tab:red"], label=[f"kept ({int((finite & kept).sum())})",
                                                        f"removed ({int((finite & ~kept).sum())})"])
        axes.set_xscale("log")
    if config.threshold is not None:
        axes.axvline(config.threshold, color="black", linestyle="--", label=f"threshold {config.threshold:g}")
    rules = [f"{k} {getattr(config, k)}" for k in ("best_k", "best_fraction") if getattr(config, k) is not None]
    rules += [f"min_images {config.min_images}"] if config.min_images > 1 else []
    axes.set_title(f"GraFIQs {config.group} magnitude (larger = lower quality)" + (f"; {', '.join(rules)}" if rules else ""),
                   fontsize=9)
    axes.set_xlabel(f"{config.group} magnitude")
    axes.set_ylabel("images")
    axes.legend(fontsize=8)
    figure.tight_layout()
    atomic_write_with(path, lambda file: figure.savefig(file, format="png"))


def write_decisions(path: Path, container, records: ScoredRecords, reason: np.ndarray, group: str) -> None:
    """images.csv: name, label, magnitude, decision (kept or the rule that removed it) per scored image, streamed."""
    from grafiqs.data.containers import record_name
    from grafiqs.io.atomic import atomic_write_with

    shards = list(container.shards.values())
    words = {KEPT: "kept", **REASONS}

    def write(file) -> None:
        text = io.TextIOWrapper(file, encoding="utf-8", newline="", write_through=False)
        rows = csv.writer(text)
        rows.writerow(["path", "label", group, "decision"])
        for shard, key, label, magnitude, code in zip(records.shard.tolist(), records.key.tolist(),
                                                      records.label.tolist(), records.magnitude.tolist(), reason.tolist()):
            rows.writerow([record_name(shards[shard].spelled, key, shards[shard].width), label, magnitude, words[code]])
        text.flush()
        text.detach()

    atomic_write_with(path, write)


def report_rows(records: ScoredRecords, reason: np.ndarray, unscored: np.ndarray, old_labels: np.ndarray,
                unreadable: int) -> list[list]:
    """identities.csv: per old label, its records, how many were scored and kept, why the others went, the new label."""
    labels = np.unique(np.concatenate([records.label, unscored]))
    position = {int(label): i for i, label in enumerate(labels.tolist())}
    table = np.zeros((len(labels), 2 + len(REASONS) + 1), dtype=np.int64)  # scored, kept, reasons..., not scored
    rows_of = np.searchsorted(labels, records.label)
    np.add.at(table[:, 0], rows_of, 1)
    np.add.at(table[:, 1], rows_of[reason == KEPT], 1)
    for column, code in enumerate(REASONS, start=2):
        np.add.at(table[:, column], rows_of[reason == code], 1)
    np.add.at(table[:, -1], np.searchsorted(labels, unscored), 1)
    new = {int(old): new for new, old in enumerate(old_labels.tolist())}
    rows = []
    for label, i in position.items():
        scored, kept, *removed, not_scored = table[i].tolist()
        records_count = scored + not_scored
        rows.append([label, new.get(label, ""), records_count, scored, kept, records_count - kept, not_scored, *removed])
    if unreadable:
        rows.append(["unreadable", "", unreadable, 0, 0, unreadable, unreadable, *([0] * len(REASONS))])
    return rows


REPORT_COLUMNS = ["label", "new_label", "records", "scored", "kept", "removed", "not_scored", *REASONS.values()]


# --------------------------------------------------------------------------- the run


def curate(config: CurationConfig, say=print) -> dict:
    """Check everything, then write the curated set and its report into config.output_dir; the summary."""
    from grafiqs.data.containers import RecordIOContainer, open_container
    from grafiqs.data.recordio import IDX_NAME, PROPERTY_NAME, REC_NAME
    from grafiqs.io.atomic import atomic_write_text
    from grafiqs.io.ledger import OutputFolder
    from grafiqs.io.score_files import write_csv

    started = time.perf_counter()
    container = open_container(config.input)
    if not isinstance(container, RecordIOContainer):
        what = "a .bin verification set" if container is not None else "no RecordIO set (no .rec file)"
        raise InputError(f"--input {config.input} is {what}; curation writes a RecordIO training set from one")
    output = OutputFolder(config.output_dir, "--output_dir")
    inputs = {Path(os.path.realpath(Path(s.reader.rec_path).parent)) for s in container.shards.values()}
    if Path(os.path.realpath(output.path)) in inputs:
        raise InputError(f"--output_dir {config.output_dir} holds the input set: the input is never modified; choose "
                         "another folder")
    names = {REC_NAME, IDX_NAME, PROPERTY_NAME, REPORT, DECISIONS, HISTOGRAM, SUMMARY}
    output.check(names)  # creates nothing
    records = read_scores(config.scores, container, config.group)
    reason = select(records.label, records.magnitude, config.threshold, config.best_k, config.best_fraction,
                    config.min_images)
    kept = np.flatnonzero(reason == KEPT)
    if not len(kept):
        raise InputError(f"the rules keep no image of the {len(reason)} scored; relax threshold, best_k, best_fraction "
                         "or min_images")
    kept = kept[np.lexsort((kept, records.label[kept]))]  # grouped by identity, in record order within it
    old_labels, new_labels, counts = np.unique(records.label[kept], return_inverse=True, return_counts=True)
    unscored, unreadable = unscored_labels(container, records)
    header = all(shard.header is not None for shard in container.shards.values())
    size = image_size(container, records, int(kept[0]))

    output.claim(names)
    write_training_set(output.path, kept_images(container, records, kept, new_labels.reshape(-1)), counts, header, size)
    write_csv(output.path / REPORT, REPORT_COLUMNS, report_rows(records, reason, unscored, old_labels, unreadable))
    write_decisions(output.path / DECISIONS, container, records, reason, config.group)
    write_histogram(output.path / HISTOGRAM, records.magnitude, reason == KEPT, config)
    summary = {
        "config": asdict(config),
        "records": int(len(records.key) + len(unscored) + unreadable),
        "scored": int(len(records.key)),
        "kept": int(len(kept)),
        "not_scored": int(len(unscored) + unreadable),
        **{name: int((reason == code).sum()) for code, name in REASONS.items()},
        "identities_scored": int(len(np.unique(records.label))),
        "identities_kept": int(len(counts)),
        "header": header,
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_text(output.path / SUMMARY, json.dumps(summary, indent=1))
    say(f"kept {summary['kept']} of {summary['records']} records ({summary['identities_kept']} of "
        f"{summary['identities_scored']} identities) in {output.path / REC_NAME}; removed: "
        + ", ".join(f"{summary[name]} {name.replace('_', ' ')}" for name in ("not_scored", *REASONS.values()))
        + f"; report {output.path / REPORT}, histogram {output.path / HISTOGRAM}")
    return summary


# --------------------------------------------------------------------------- the command


def checked_config_file(what: str):
    """jsonargparse's --config action with the file through the regular-file check first (grafiqs.io.reading: a FIFO
    or a device is refused at once instead of blocking, a huge file before it is read)."""
    from jsonargparse import ActionConfigFile

    class ConfigFile(ActionConfigFile):
        def __call__(self, parser, cfg, values, option_string=None):
            if isinstance(values, (str, os.PathLike)) and os.path.lexists(values):
                from grafiqs.io.reading import open_regular

                open_regular(values, what, CONFIG_FILE_LIMIT).close()
            super().__call__(parser, cfg, values, option_string)

    return ConfigFile


def config_parser(prog: str = "curate.py"):
    """`--config FILE` (YAML) plus every key as an option (`--threshold 120`, `--scores '[run_0, run_1]'`)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog=prog, exit_on_error=False, epilog=EXIT_CODES, description=(
        "Write a new RecordIO training set keeping the images of a scored one by GraFIQs rules: a global threshold "
        "on a group's magnitude, the best K or fraction per identity, identities with fewer than M images left "
        "dropped; with a per-identity report and a histogram of the scores."))
    parser.add_argument("--config", action=checked_config_file("curation config"),
                        help="YAML file, e.g. configs/curation/filter.yaml")
    parser.add_class_arguments(CurationConfig)
    return parser


def load_config(overrides: list[str], prog: str = "curate.py") -> CurationConfig:
    from jsonargparse import ArgumentError

    parser = config_parser(prog)
    try:
        namespace = parser.parse_args(list(overrides))
    except ArgumentError as error:
        raise InputError(" ".join(str(error).split())) from None
    try:
        instantiated = parser.instantiate(namespace)
    except (TypeError, ValueError) as error:
        cause = error
        while cause is not None and not isinstance(cause, InputError):
            cause = cause.__cause__ or cause.__context__
        raise cause or InputError(" ".join(str(error).split())) from None
    from dataclasses import fields

    return CurationConfig(**{f.name: instantiated[f.name] for f in fields(CurationConfig)})


def main(argv: list[str] | None = None, prog: str = "curate.py") -> int:
    from grafiqs.errors import GrafiqsError, RunInterrupted, report_stop, stop_on_signals

    try:
        with stop_on_signals():
            config = load_config(sys.argv[1:] if argv is None else argv, prog)
            curate(config)
    except GrafiqsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, RunInterrupted) as stop:
        return report_stop(stop, "no output file is left half written (each is renamed into place when complete)")
    except OSError as error:
        print(f"error: cannot write {error.filename or 'the output folder'}: {error.strerror or error}; free space or "
              "choose a writable --output_dir, then rerun the same command", file=sys.stderr)
        return 4
    return 0
