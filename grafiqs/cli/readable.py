"""score.py's options and summary lines for the readable score (issue 22; grafiqs.pipeline.readable does the work)."""
from __future__ import annotations

import argparse
import sys


def add_readable_options(parser: argparse.ArgumentParser) -> None:
    readable = parser.add_argument_group(
        "a score a person can read (the raw magnitudes and the quality column stay as they are)")
    readable.add_argument("--calibrate", metavar="REFERENCE_FOLDER",
                          help="score this folder of good reference crops (instead of --image-path) and fit the 0-100 "
                          "mapping of every scored group: reference median -> 50, 5th/95th magnitude percentiles -> "
                          "about 90/10; written to <weights>.calibration.json (never replaced) and calibration.json")
    readable.add_argument("--calibration", metavar="FILE",
                          help="the calibration file to use (default: <weights>.calibration.json when it exists), or "
                          "with --calibrate the file to write")
    readable.add_argument("--scalar-score-files", action="store_true",
                          help="also write GraFIQs_<group>_scalar.txt: <path> <quality_0_100> (-1 = cannot assess) "
                          "beside the official raw-magnitude files; needs a calibration")
    readable.add_argument("--ofiq-csv", action="store_true",
                          help="also write ofiq.csv, OFIQ's layout: Filename;GraFIQs;GraFIQs.scalar (the --quality-group "
                          "magnitude and its 0-100 scalar); needs a calibration")
    readable.add_argument("--contact-sheet", action="store_true",
                          help="also write contact_sheet.png: the 8 best and 8 worst images (--quality-group) with their "
                          "scores, each above its input-gradient magnitude |dL/dx| (where GraFIQs wants it changed)")
    readable.add_argument("--save-gradient-maps", metavar="DIR",
                          help="also save, for the --gradient-maps lowest-quality images (--quality-group), the crop "
                          "beside its input-gradient magnitude |dL/dx| over it (where GraFIQs wants it changed), as PNG "
                          "under their relative paths")
    readable.add_argument("--gradient-maps", type=int, metavar="N",
                          help="how many images --save-gradient-maps shows, lowest quality first; 0 = all (default 16)")
    readable.add_argument("--no-face-check", action="store_true",
                          help="skip the aligned-face check (MTCNN O-Net on each 112x112 crop, ~1-4 ms per image): "
                          "face_probability and alignment_error become NaN and nothing is flagged")


def print_readable(readable) -> None:
    """The calibration's parameters, what the face check flagged, and the notes of a finished run."""
    calibration, args = readable.calibration, readable.args
    if calibration is not None:
        reference = calibration.reference
        if readable.fitted:
            print(f"calibration fitted on {reference['used']} of {reference['scored']} reference images of "
                  f"{reference['folder']} ({reference['excluded_not_finite']} without a finite score and "
                  f"{reference['excluded_not_aligned']} not aligned faces left out); written to {readable.source}")
        else:
            print(f"quality_0_100 ({args.quality_group}; 0-100, higher = better, 50 = the median of the reference set "
                  f"of {reference.get('used', '?')} images, -1 = cannot assess) from {readable.source}:")
        for group, mapping in calibration.groups.items():
            if readable.fitted or group == args.quality_group:
                fit = reference.get("groups", {}).get(group, {})
                anchors = (f"; reference log10 magnitude p5 {fit['log10_p5']:.4f} -> {int(mapping(10 ** fit['log10_p5']))}, "
                           f"p95 {fit['log10_p95']:.4f} -> {int(mapping(10 ** fit['log10_p95']))}") if fit else ""
                print(f"  {group}: Q = round(100 * (1 - sigmoid((log10(magnitude) - {mapping.x0:.6g}) / {mapping.w:.6g})))"
                      f"{anchors}")
    if readable.face_check is not None:
        from grafiqs.faces.check import MAX_ALIGNMENT_ERROR, MIN_FACE_PROBABILITY, NOT_ALIGNED

        rule = (f"face_probability < {MIN_FACE_PROBABILITY} or alignment_error > {MAX_ALIGNMENT_ERROR:g} px of the "
                "112 crop")
        if readable.flagged:
            examples = ", ".join(readable.flagged[:3])
            print(f"warning: {len(readable.flagged)} images do not look like aligned faces ({rule}): status "
                  f"'{NOT_ALIGNED}', quality_0_100 -1 (e.g. {examples}); align photos with --align (strongly degraded "
                  "faces are flagged too)", file=sys.stderr)
        else:
            print(f"face check: every scored image looks like an aligned face (flagged would be: {rule})")
        if readable.unchecked:
            print(f"note: {readable.unchecked} images were scored by an earlier run without the face check: their "
                  "face_probability and alignment_error are NaN (--overwrite scores them anew)")
    for note in readable.notes:
        print(f"note: {note}")
    extra = [name for name, on in (("GraFIQs_<group>_scalar.txt", args.scalar_score_files), ("ofiq.csv", args.ofiq_csv),
                                   ("contact_sheet.png", args.contact_sheet)) if on]
    if extra:
        print(f"wrote {' and '.join(extra)}")
