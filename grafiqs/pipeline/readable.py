"""What a person reads beside the raw magnitudes (issue 22): `quality_0_100`, the aligned-face check, OFIQ's CSV.

The raw magnitudes and the `quality` column are not touched: this only adds. `grafiqs.pipeline.scoring` calls
it at fixed points: `check_options` (the options), `ReadableRun(args, paths)` once the weights are known and
before anything is created (reads and checks the calibration, loads the face check), the module's face check in
the engine, `fit` after scoring with --calibrate, and `row`/`write_files` beside scores.csv.

- `quality_0_100`: the calibrated scalar (grafiqs.quality.calibration) of the --quality-group magnitude,
  -1 where no score can be given (a non-finite score, or a crop flagged by the face check), empty where the
  weights have no calibration.
- `face_probability`, `alignment_error`: grafiqs.faces.check, NaN where the check did not run.
- `--scalar-score-files`: `GraFIQs_<group>_scalar.txt`, `<path> <0-100 or -1>`, beside the official files.
- `--ofiq-csv`: `ofiq.csv`, `Filename;GraFIQs;GraFIQs.scalar` as OFIQ writes its measures (native; scalar).
- `--contact-sheet`: `contact_sheet.png`, the 8 best and 8 worst images with their scores, each above its input
  gradient magnitude (where GraFIQs wants the image changed).
- `--calibrate REFERENCE_FOLDER`: scores that folder, fits every scored group and writes `calibration.json`
  into --output-dir and, when that name is free, beside the weights (`<weights>.calibration.json`, or the
  file --calibration names).
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grafiqs.errors import InputError
from grafiqs.faces.check import NOT_ALIGNED, is_flagged, make_face_check
from grafiqs.io.ledger import OutputFolder
from grafiqs.quality.calibration import (
    CANNOT_ASSESS,
    MIN_REFERENCE,
    Calibration,
    calibrate,
    calibration_path_for,
    read_calibration,
)

SCALAR_COLUMN = "quality_0_100"
FACE_COLUMNS = ["face_probability", "alignment_error"]
OFIQ_FILE = "ofiq.csv"
CALIBRATION_FILE = "calibration.json"
CONTACT_SHEET = "contact_sheet.png"
SHEET_SIZE = 8  # best and worst images on the contact sheet


def scalar_file(group: str) -> str:
    return f"GraFIQs_{group}_scalar.txt"


def readable_outputs(args) -> set[str]:
    """The files the options of this module add to --output-dir."""
    names = {scalar_file(g) for g in args.groups} if getattr(args, "scalar_score_files", False) else set()
    names |= {OFIQ_FILE} if getattr(args, "ofiq_csv", False) else set()
    names |= {CONTACT_SHEET} if getattr(args, "contact_sheet", False) else set()
    return names | ({CALIBRATION_FILE} if getattr(args, "calibrate", None) else set())


def check_readable_options(args) -> None:
    """--calibrate REFERENCE_FOLDER is the run's input (so --image-path is left out)."""
    if getattr(args, "calibrate", None) is None:
        return
    if args.calibrate == "":
        raise InputError("--calibrate is empty; give the folder of reference face crops")
    if args.image_path is not None:
        raise InputError("--calibrate REFERENCE_FOLDER is the folder scored: leave --image-path out")
    args.image_path = args.calibrate


class ReadableRun:
    """The calibration and the face check of one run; built before anything is created (bad input: InputError)."""

    def __init__(self, args, paths: list[str]):
        self.args = args
        self.colour = "rgb" if args.bgr2rgb else "bgr"
        self.calibration: Calibration | None = None
        self.source: Path | None = None  # the calibration file used (or written by --calibrate)
        self.fitted = False
        self.notes: list[str] = []
        self.flagged: list[str] = []
        self.unchecked = 0  # scored images without face-check readings (an earlier run without the check)
        self.groups = args.groups
        if args.calibrate:
            self.destination = Path(args.calibration) if args.calibration else calibration_path_for(args.weights)
            if os.path.lexists(self.destination):
                raise InputError(f"--calibrate: {self.destination} exists and is never replaced; move it away, or name "
                                 "another file with --calibration FILE")
            if not self.destination.parent.is_dir():
                raise InputError(f"--calibrate: the folder of {self.destination} does not exist")
            if len(paths) < MIN_REFERENCE:
                raise InputError(f"--calibrate needs at least {MIN_REFERENCE} reference images, {args.calibrate} has "
                                 f"{len(paths)}")
        else:
            self._load(Path(args.calibration) if args.calibration else calibration_path_for(args.weights),
                       explicit=bool(args.calibration))
        self.face_check, note = make_face_check(not args.no_face_check, args.bgr2rgb)
        if note:
            self.notes.append(note)

    def _load(self, path: Path, explicit: bool) -> None:
        from grafiqs.io.reading import file_digest

        wanted = [o for o, on in (("--scalar-score-files", self.args.scalar_score_files),
                                  ("--ofiq-csv", self.args.ofiq_csv)) if on]
        if not explicit and not os.path.lexists(path):
            if wanted:
                raise InputError(f"{' and '.join(wanted)} need a calibration of these weights: none at {path}; fit one "
                                 "with --calibrate REFERENCE_FOLDER or name it with --calibration FILE")
            self.notes.append(f"no calibration for these weights (looked for {path}): quality_0_100 is empty; fit one "
                              "with --calibrate REFERENCE_FOLDER")
            return
        calibration = read_calibration(path)
        try:
            calibration.check_for(file_digest(self.args.weights, "weights file"), self.colour, path)
        except InputError as error:  # a file found beside weights replaced since (or fed the other colour order)
            if explicit or wanted:
                raise
            self.notes.append(f"ignored: {error}; quality_0_100 is empty")
            return
        needed = self.groups if self.args.scalar_score_files else (self.args.quality_group,)
        missing = [g for g in needed if g not in calibration.groups]
        if missing:
            raise InputError(f"calibration file {path} has no parameters for group {', '.join(missing)}; fit anew with "
                             "--calibrate REFERENCE_FOLDER and the same --groups")
        self.calibration, self.source = calibration, path

    # ------------------------------------------------------------------ per image

    @staticmethod
    def face(record: dict) -> tuple[float, float]:
        return record.get("face_probability", math.nan), record.get("alignment_error", math.nan)

    def status(self, record: dict) -> str:
        """The non-finite reason first (no score at all), then the face check's flag, else ok."""
        if "status" in record:
            return record["status"]
        return NOT_ALIGNED if is_flagged(*self.face(record)) else "ok"

    def scalar(self, record: dict, group: str) -> int | str:
        if self.calibration is None or group not in self.calibration.groups:
            return ""
        if self.status(record) != "ok":
            return CANNOT_ASSESS
        return int(self.calibration.groups[group](record["scores"][group]))

    def row(self, record: dict) -> tuple[int | str, str, float, float]:
        """(quality_0_100, status, face_probability, alignment_error) of a scored image's record."""
        return (self.scalar(record, self.args.quality_group), self.status(record), *self.face(record))

    # ------------------------------------------------------------------ files

    def fit(self, output_dir: Path, scored: list[str], records: dict[str, dict]) -> None:
        """--calibrate: fit every scored group on the reference images that have a score and pass the face check;
        write calibration.json into the output folder and, when the name is still free, at the destination."""
        from grafiqs.io.atomic import atomic_write_text, atomic_write_with
        from grafiqs.io.reading import file_digest

        if not self.args.calibrate:
            return
        usable = [p for p in scored if self.status(records[p]) == "ok"]
        reference = {"folder": str(self.args.calibrate), "scored": len(scored), "used": len(usable),
                     "excluded_not_finite": sum("status" in records[p] for p in scored),
                     "excluded_not_aligned": sum(self.status(records[p]) == NOT_ALIGNED for p in scored),
                     "precision": self.args.precision}
        magnitudes = {g: np.array([records[p]["scores"][g] for p in usable], np.float64) for g in self.groups}
        calibration = calibrate(magnitudes, file_digest(self.args.weights, "weights file"), self.colour, reference)
        text = calibration.to_json()
        atomic_write_text(output_dir / CALIBRATION_FILE, text)

        def still_free(sha256, size):
            if os.path.lexists(self.destination):
                raise FileExistsError(self.destination)

        try:
            atomic_write_with(self.destination, lambda file: file.write(text.encode("utf-8")), before_rename=still_free)
            self.source = self.destination
        except FileExistsError:
            self.notes.append(f"{self.destination} appeared while scoring and was kept; the fit is in "
                              f"{output_dir / CALIBRATION_FILE} (use it with --calibration)")
            self.source = output_dir / CALIBRATION_FILE
        self.calibration, self.fitted = calibration, True

    def write_files(self, output_dir: Path, scored: list[str], shown: dict[str, str], records: dict[str, dict]) -> None:
        """--scalar-score-files and --ofiq-csv; counts what the face check flagged (for the summary)."""
        from grafiqs.io.atomic import atomic_write_text

        self.flagged = [p for p in scored if self.status(records[p]) == NOT_ALIGNED]
        self.unchecked = sum("face_probability" not in records[p] for p in scored) if self.face_check else 0
        if self.args.scalar_score_files:
            for group in self.groups:
                atomic_write_text(output_dir / scalar_file(group),
                                  "".join(f"{shown[p]} {self.scalar(records[p], group)}\n" for p in scored))
        if self.args.ofiq_csv:
            buffer = io.StringIO()
            writer = csv.writer(buffer, delimiter=";", lineterminator="\n")
            writer.writerow(["Filename", "GraFIQs", "GraFIQs.scalar"])
            group = self.args.quality_group
            writer.writerows([shown[p], repr(float(records[p]["scores"][group])), self.scalar(records[p], group)]
                             for p in scored)
            atomic_write_text(output_dir / OFIQ_FILE, buffer.getvalue())

    def gradient_views(self, chosen: list[str], backbone, dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """path -> (the crop as scored, RGB uint8 HxWx3; |dL/dx| summed over channels, HxW) for `chosen`, read again
        through `dataset(paths)` (the run's dataset class, aligner included) and scored again in batches by the run's
        scorer settings; a path that cannot be read again is left out."""
        from grafiqs.data.decode import normalize
        from grafiqs.data.folders import collate_images
        from grafiqs.evaluation.contact_sheet import gradient_maps
        from grafiqs.quality.scorer import GraFIQsScorer

        device = next(backbone.parameters()).device
        scorer = GraFIQsScorer(backbone, ("image",), precision=self.args.precision)
        views = {}
        for first in range(0, len(chosen), self.args.batch_size):
            part = chosen[first:first + self.args.batch_size]
            images = dataset(part)
            batch = collate_images([images[i] for i in range(len(part))])
            if not len(batch["index"]):
                continue
            gradients = scorer(normalize(batch["image"].to(device)), keep_gradients=True).gradients["image"]
            maps = gradient_maps(gradients.cpu())
            crops = batch["image"].permute(0, 2, 3, 1).numpy()
            crops = crops if self.args.bgr2rgb else crops[..., ::-1]  # shown in RGB
            views.update({part[int(i)]: (crops[row], maps[row]) for row, i in enumerate(batch["index"])})
        return views

    def ranked(self, scored: list[str], records: dict[str, dict]) -> list[str]:
        """The images with status ok, best first by the --quality-group magnitude (smaller = better)."""
        group = self.args.quality_group
        return sorted((p for p in scored if self.status(records[p]) == "ok"), key=lambda p: records[p]["scores"][group])

    def label(self, record: dict) -> str:
        group = self.args.quality_group
        scalar = self.scalar(record, group)
        return f"{record['scores'][group]:.4g}" + (f" | Q {scalar}" if scalar != "" else "")

    def write_contact_sheet(self, output_dir: Path, scored: list[str], records: dict[str, dict], backbone,
                            dataset) -> None:
        """--contact-sheet: the best and worst images by the --quality-group magnitude (status ok), each above the
        magnitude of its input gradient (gradient_views)."""
        from grafiqs.evaluation.contact_sheet import write_contact_sheet

        if not self.args.contact_sheet:
            return
        usable = self.ranked(scored, records)
        count = min(SHEET_SIZE, max(1, len(usable) // 2))
        shown = self.gradient_views(list(dict.fromkeys(usable[:count] + usable[::-1][:count])), backbone, dataset)
        if not shown:
            self.notes.append("contact sheet not written: no image with status ok could be read again")
            return

        def row(title: str, paths: list[str]):
            paths = [p for p in paths if p in shown]
            return title, [shown[p][0] for p in paths], [shown[p][1] for p in paths], [self.label(records[p]) for p in paths]

        write_contact_sheet(output_dir / CONTACT_SHEET, [row("best", usable[:count]), row("worst", usable[::-1][:count])],
                            title=f"{self.args.quality_group} magnitude (larger = lower quality) | quality_0_100; "
                                  "below each crop: |dL/dx|")

    def write_gradient_maps(self, maps: GradientMaps | None, scored: list[str], records: dict[str, dict], backbone,
                            dataset) -> None:
        """--save-gradient-maps DIR: the --gradient-maps N lowest-quality images (status ok; 0 = all), each as a PNG
        of the crop beside its |dL/dx| over the crop in gray, under the image's relative path; maps an earlier run
        wrote there that this run does not are removed (while still exactly as written)."""
        from grafiqs.evaluation.contact_sheet import gradient_overlay
        from grafiqs.io.atomic import atomic_write_bytes

        if maps is None:
            return
        worst = self.ranked(scored, records)[::-1]
        chosen = worst[:self.args.gradient_maps] if self.args.gradient_maps else worst
        views = self.gradient_views(chosen, backbone, dataset)
        scale = max((float(np.percentile(m, 99.5)) for _, m in views.values()), default=1.0)
        for path, (crop, magnitude) in views.items():
            name = maps.names[path]
            (maps.folder.path / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(maps.folder.path / name, gradient_overlay(crop, magnitude, scale))
        # only maps: DIR may be --output-dir, whose other files this run writes itself
        maps.folder.remove((maps.folder.written() & set(maps.names.values())) - {maps.names[p] for p in views})
        self.notes.append(f"wrote {len(views)} gradient maps (the lowest {self.args.quality_group} quality first) "
                          f"to {maps.folder.path}: crop | |dL/dx| on one colour scale for all")


@dataclass
class GradientMaps:
    """--save-gradient-maps: the claimed folder and each image's PNG name in it."""

    folder: OutputFolder
    names: dict[str, str]
