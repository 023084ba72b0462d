"""`score.py`: GraFIQs scores for a folder of aligned face crops, a drop-in for the authors' extract_grafiqs.py."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafiqs.cli.readable import add_readable_options, print_readable
from grafiqs.errors import GrafiqsError, ImageError, RunInterrupted, report_stop
from grafiqs.pipeline.scoring import run_scoring

DESCRIPTION = """\
GraFIQs face image quality: push each aligned 112x112 face crop through a frozen
BatchNorm iResNet, measure how far the per-image BatchNorm input statistics are from
the running statistics recorded in training, backpropagate that discrepancy and sum
the absolute gradients of the input image (group `image`) and of the four stage
outputs (`block1`..`block4`).

The raw magnitude is what the official GraFIQs_<group>.txt files hold: LARGER means a
larger required change, i.e. LOWER quality. scores.csv adds `quality` = -log10(magnitude
of --quality-group), where higher is better.

Without arguments, a demo draws a synthetic verification set (clean enrolments,
clean and degraded probes of unseen identities) into outputs/demo/, scores it with the
bundled demo model and prints how well each group's discard order helps verification."""


EPILOG = """\
outputs in --output-dir:
  GraFIQs_image.txt, GraFIQs_block1.txt .. GraFIQs_block4.txt   <path> <raw magnitude>, sorted by path
  scores.csv    path, every group's magnitude, bns_loss, quality (higher = better), quality_0_100 (the
                calibrated 0-100 scalar, -1 = cannot assess), resized, status, face_probability and
                alignment_error (the aligned-face check; status `not an aligned face?` when it fails);
                with --align/--landmarks also x1 y1 .. x5 y5 (the landmarks used) and detection_confidence
  embeddings.npy  with --save-embeddings: float32 [N, D], rows in the order of scores.csv
  GraFIQs_<group>_scalar.txt, ofiq.csv, contact_sheet.png, calibration.json   with --scalar-score-files,
                --ofiq-csv, --contact-sheet, --calibrate (gradient maps go to --save-gradient-maps DIR)
  errors.csv    every skipped file and why (names that cannot go into a score file, e.g. with a
                line break or not UTF-8, are skipped too and shown escaped)
  .grafiqs/     per-batch result log: rerunning the same command resumes an interrupted run;
                results count only for the same settings, the same weights (by content) and
                unchanged image files (size, mtime)

The program never overwrites or deletes a file it did not write: an --output-dir holding a
foreign scores.csv (or any other output name) is refused.

exit codes: 0 done; 2 bad option or input (a file that cannot be read too); 3 --strict stopped at a bad file;
4 cannot write; 6 a decoding worker died (out of memory?);
5 no usable score at all; 130 Ctrl-C; 143 SIGTERM (finished batches are kept in all cases)

examples:
  python score.py --image-path crops/ --weights 181952backbone.pth --backbone iresnet100 --output-dir out/
  python score.py --image-path crops/ --image-extension jpg,png --recursive --bgr2rgb --weights backbone.pth
"""


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    return _bounded_int(text, 0)


def _bounded_int(text: str, least: int, most: int = 2**16) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is below {least}")
    if value > most:
        raise argparse.ArgumentTypeError(f"{value} is above {most}")
    return value


def devices_value(text: str) -> str:
    """'auto', a positive count, -1 (all) or a comma-separated list of device indices."""
    items = [t.strip() for t in text.split(",")]
    if text == "auto" or text == "-1" or ("," not in text and text.isdigit() and 0 < int(text) <= 2**16) or (
            "," in text and all(t.isdigit() and int(t) <= 2**16 for t in items if t) and any(items)):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: give a number of devices from 1 to 65536, -1 for all, auto, or "
                                     "indices like 0,1")


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# scores.csv columns with --align / --landmarks: the five points used (x1 y1 = left eye ... x5 y5 = right mouth
# corner, in the photo's pixels) and MTCNN's confidence (NaN for landmarks from a file).


# Options that say what to score or where to write: with none of them, score.py runs the demo.
# Options that say what to score or where to write: with none of them, score.py runs the demo.
SCORING_OPTIONS = ("image_path", "image_extension", "output_dir", "backbone", "weights", "path_replace",
                   "path_replace_with", "bgr2rgb", "recursive", "quality_group", "groups", "save_embeddings", "overwrite", "strict",
                   "align", "landmarks", "select_face", "save_aligned", "calibrate", "calibration",
                   "scalar_score_files", "ofiq_csv", "no_face_check", "contact_sheet",
                   "save_gradient_maps", "gradient_maps")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="score.py", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    official = parser.add_argument_group("options of the official extract_grafiqs.py (same meaning)")
    official.add_argument("--image-path", help="folder of aligned 112x112 face crops, or a single image file; or, read "
                          "in place: a RecordIO set (the folder holding train.rec + train.idx, or the .rec), a folder "
                          "of .rec shards, a .bin verification set (images named <file>#<record key or .bin position>, "
                          "scores.csv gains the label column for RecordIO)")
    official.add_argument(
        "--image-extension", help="extension(s) to score, comma-separated, case-insensitive (default: jpg,jpeg,png,bmp,webp,tif,tiff)"
    )
    official.add_argument("--output-dir", help="folder for the score files, created if missing (default: outputs/scores)")
    official.add_argument(
        "--backbone",
        help="iresnet18|iresnet34|iresnet50|iresnet100|iresnet200, or custom (a train_fr.py model) "
        "(default: inferred from the weights' keys)",
    )
    official.add_argument(
        "--weights",
        help="backbone state dict (.pth, insightface / official GraFIQs key layout), or a train_fr.py checkpoint "
        "(.ckpt: its recorded colour order becomes the default)",
    )
    official.add_argument("--gpu", type=non_negative_int,
                          help="CUDA device index; without a GPU the run falls back to the CPU")
    official.add_argument("--path-replace", help="prefix of the image paths to replace in the score files "
                          "(needs --path-replace-with; alone it is ignored, as in the official script)")
    official.add_argument("--path-replace-with", help="string that replaces the --path-replace prefix")
    official.add_argument(
        "--bgr2rgb",
        action="store_true",
        help="feed RGB instead of OpenCV's BGR (the official default is BGR; insightface-trained models expect RGB)",
    )
    extra = parser.add_argument_group("additional options")
    extra.add_argument("--recursive", action="store_true", help="also score images in sub-folders (default: flat)")
    extra.add_argument("--batch-size", type=positive_int, default=16, help="images per forward/backward (default: 16)")
    extra.add_argument("--num-workers", type=non_negative_int, default=1,
                       help="DataLoader processes decoding images (default: 1)")
    extra.add_argument("--accelerator", default="auto", choices=ACCELERATORS, help="(default: auto)")
    extra.add_argument("--devices", type=devices_value, default="1",
                       help="number of devices/processes, -1 for all, or GPU indices like 0,1 (default: 1)")
    extra.add_argument("--num-nodes", type=positive_int, default=1, help="machines for multi-node DDP (default: 1)")
    extra.add_argument(
        "--quality-group", help="group whose magnitude becomes the `quality` column (default: image, or the first of "
        "--groups without it)"
    )
    extra.add_argument(
        "--groups", default="image,block1,block2,block3,block4",
        help="comma-separated groups to score (default: all five); the backward stops at the earliest one asked, so "
        "--groups block4 runs about 2x faster per image")
    extra.add_argument(
        "--precision",
        default="32",
        choices=["32", "bf16"],
        help="32: exact (default). bf16: opt-in bfloat16 autocast of the convolutions, faster on CPUs with "
        "AVX-512-BF16/AMX and on GPUs; scores are approximate (rank fidelity in benchmarks/RESULTS.md)",
    )
    extra.add_argument(
        "--channels-last", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
        help="run the convolutions in the NHWC memory layout: exact within 1e-4 relative (measured 5e-5), float32 1.4x "
        "faster on an Intel Ice Lake Xeon, no faster on AMD EPYCs; bf16 1.07-1.25x faster on an AMD EPYC with "
        "AVX512-BF16 (oneDNN's bf16 convolutions reorder NCHW), slower on an H200 (benchmarks/RESULTS.md). auto (default): on for "
        "--precision bf16 on a CPU, else off; bare --channels-last is on. bench_scorer.py --suite measures it on yours")
    extra.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "on", "off"],
        help="torch.compile the network's stages: faster per image (same math within 1e-4 relative) after a one-time "
        "compilation (~85 s for iresnet50 on 2 CPU cores, ~20 s from the cache). auto (default): compile when this "
        "run's images reach the break-even measured on this machine for the setting; without a measurement, time "
        "eager batches and, when the rest would take 10 minutes or more, compile once to measure and keep the "
        "faster. Measured speeds and inductor's compiled kernels are kept in ~/.cache/grafiqs ($GRAFIQS_CACHE_DIR)",
    )
    extra.add_argument(
        "--save-embeddings", action="store_true", help="also write the FR embeddings of the same forward pass (embeddings.npy)"
    )
    extra.add_argument("--overwrite", action="store_true",
                       help="discard every result an earlier run left in --output-dir (its run log and the files it "
                       "wrote) and score everything anew; files the program did not write are never touched")
    extra.add_argument(
        "--strict", action="store_true",
        help="stop with exit code 3 at the first unreadable image (default: skip it, list it in errors.csv, go on)",
    )
    photos = parser.add_argument_group(
        "unaligned photos (grafiqs.faces.align: five-point ArcFace alignment, exactly insightface's norm_crop)")
    photos.add_argument("--align", action="store_true",
                        help="detect the face (MTCNN with facenet-pytorch's weights) and align it to the 112x112 ArcFace "
                        "crop before scoring; a photo without a face is skipped with that reason")
    photos.add_argument("--landmarks", metavar="FILE",
                        help="five landmarks per image to align from: IJB-C's ijbc_name_5pts_score.txt layout "
                        "(name x1 y1 ... x5 y5 [score]) or a CSV with header path,x1,y1,...,x5,y5; images without an "
                        "entry are detected with --align and skipped without it")
    photos.add_argument("--select-face", choices=("largest", "center"), default="largest",
                        help="which detected face to score when there are several: the largest box, or the one nearest "
                        "the image centre (default: largest)")
    photos.add_argument("--save-aligned", metavar="DIR",
                        help="also save the aligned crops actually scored, as PNG, under their relative paths")
    add_readable_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.demo = not any(getattr(args, name) != parser.get_default(name) for name in SCORING_OPTIONS)
    try:
        return report(run_scoring(args), args)
    except ImageError as error:  # only --strict turns a bad image into an error
        print(f"error: {error}\nthe scored batches are kept: rerun without --strict to skip bad files and resume",
              file=sys.stderr)
        return 3
    except GrafiqsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, RunInterrupted) as stop:
        if getattr(args, "drawing", False):
            return report_stop(stop, "the synthetic set was not drawn and nothing of it was left behind")
        return report_stop(stop, f"finished batches are kept in {log_dir(args)}")
    except RuntimeError as error:
        if "DataLoader worker" not in str(error):
            raise
        print(f"error: a decoding worker process died ({str(error).splitlines()[0]}; the system's out-of-memory killer "
              f"stops processes so). Finished batches are kept in {log_dir(args)}; rerun the same command to resume, "
              "with fewer --num-workers or a smaller --batch-size if memory is short", file=sys.stderr)
        return 6
    except OSError as error:  # read-only folder, full disk, ...: name the file, keep what is done
        where = error.filename or args.output_dir or "the output folder"
        print(f"error: cannot write {where}: {error.strerror or error}. Any batches already scored are kept in "
              f"{log_dir(args)}; free space or choose a writable --output-dir, then rerun the same command to resume",
              file=sys.stderr)
        return 4


def log_dir(args) -> Path:
    from grafiqs.io.ledger import LOG_FOLDER

    return Path(args.output_dir or "outputs/scores") / LOG_FOLDER


def report(summary: dict | None, args) -> int:
    """Print the summary of a finished run (and the demo's table); the exit status."""
    if summary is None:  # a DDP rank other than the first: rank 0 reports
        return 0
    print_summary(summary, args, summary["output_dir"])
    if args.demo:
        print_demo_report(summary["output_dir"], summary["scored"], summary["records"], summary["labels"],
                          summary["embeddings"])
    if not summary["magnitudes"]:
        print(f"error: 0 usable scores: {len(summary['failed'])} files were unreadable and {len(summary['not_finite'])} "
              "got NaN scores (see errors.csv and the status column of scores.csv)", file=sys.stderr)
        return 5
    return 0


def print_demo_report(output_dir: Path, scored: list[str], records: dict, labels, embeddings) -> None:
    import numpy as np

    from grafiqs.experiments.demo import report_demo
    from grafiqs.quality.scorer import GROUPS

    magnitudes = {g: np.array([records[p]["scores"][g] for p in scored]) for g in GROUPS}  # the demo scores all
    print()
    print(report_demo(output_dir, magnitudes, embeddings, labels))
    print(f"EDC plot: {output_dir / 'edc.png'}; table: {output_dir / 'demo_table.md'}")


def print_summary(summary: dict, args, output_dir: Path) -> None:
    recorded = getattr(args, "colour_recorded", None)
    if recorded:
        colour = f"{'RGB' if args.bgr2rgb else 'BGR'} (the checkpoint records {recorded.upper()} training images)"
    else:
        colour = "RGB (--bgr2rgb)" if args.bgr2rgb else "BGR (official default; insightface-trained models expect RGB: add --bgr2rgb)"
    print(f"scored {len(summary['scored'])} of {summary['found']} images in {summary['seconds']:.1f} s; colour order fed to the model: {colour}")
    if summary["magnitudes"]:
        values = sorted(summary["magnitudes"])
        print(
            f"{args.quality_group} magnitude (larger = lower quality): min {values[0]:.4g}, "
            f"median {values[len(values) // 2]:.4g}, max {values[-1]:.4g}"
        )
    if summary["resized"]:
        examples = ", ".join(summary["resized"][:3])
        print(
            f"warning: {len(summary['resized'])} images were not 112x112 and were resized (e.g. {examples}); GraFIQs "
            "expects aligned 112x112 face crops, and a resized full photo scores nonsense: add --align to detect "
            "and align faces (or --landmarks FILE)",
            file=sys.stderr,
        )
    if summary["not_finite"]:
        path, status = summary["not_finite"][0]
        print(f"warning: {len(summary['not_finite'])} images got NaN scores (status column of scores.csv), e.g. {path}: "
              f"{status}", file=sys.stderr)
    if summary["failed"]:
        print(f"skipped {len(summary['failed'])} unreadable files (listed in {output_dir / 'errors.csv'}):", file=sys.stderr)
        for path, reason in summary["failed"][:10]:
            print(f"  {reason}", file=sys.stderr)
    if summary["compile"] and summary["compile"]["mode"] == "auto":
        print(summary["compile"]["reason"])
    measured = summary["measured_bf16"]
    if args.precision == "32" and measured and measured["bf16_img_s"] > measured["fp32_img_s"]:
        print(f"note: --precision bf16 ran {measured['bf16_img_s']:.1f} img/s on this machine for this setting, float32 "
              f"{measured['fp32_img_s']:.1f}; it is an approximation (Spearman >= 0.9995 per group against float32, "
              "benchmarks/RESULTS.md)")
    elif args.precision == "32" and summary["bf16_units"] and not measured:
        print(f"note: this machine has {', '.join(summary['bf16_units'])}: --precision bf16 (an approximation, Spearman "
              ">= 0.9995 per group against float32) may be faster; one bf16 run measures it for this note")
    print_readable(summary["readable"])
    print(f"wrote GraFIQs_<group>.txt, scores.csv and errors.csv to {output_dir}")
