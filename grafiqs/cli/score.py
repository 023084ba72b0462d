"""`score.py`: GraFIQs scores for a folder of aligned face crops, a drop-in for the authors' extract_grafiqs.py."""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from grafiqs.io.ledger import is_primary_process
from grafiqs.io.reading import file_digest
from grafiqs.errors import GrafiqsError, ImageError, InputError, RunInterrupted, report_stop

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
  scores.csv    path, every group's magnitude, bns_loss, quality (higher = better), resized, status;
                with --align/--landmarks also x1 y1 .. x5 y5 (the landmarks used) and detection_confidence
  embeddings.npy  with --save-embeddings: float32 [N, D], rows in the order of scores.csv
  errors.csv    every skipped file and why (names that cannot go into a score file, e.g. with a
                line break or not UTF-8, are skipped too and shown escaped)
  .grafiqs/     per-batch result log: rerunning the same command resumes an interrupted run;
                results count only for the same settings, the same weights (by content) and
                unchanged image files (size, mtime)

The program never overwrites or deletes a file it did not write: an --output-dir holding a
foreign scores.csv (or any other output name) is refused.

exit codes: 0 done; 2 bad option or input; 3 --strict stopped at a bad file; 4 cannot write;
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
    if text == "auto" or text == "-1" or ("," not in text and text.isdigit() and int(text) > 0) or (
            "," in text and all(t.isdigit() for t in items if t) and any(items)):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: give a number of devices >= 1, -1 for all, auto, or indices like 0,1")


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# scores.csv columns with --align / --landmarks: the five points used (x1 y1 = left eye ... x5 y5 = right mouth
# corner, in the photo's pixels) and MTCNN's confidence (NaN for landmarks from a file).
LANDMARK_COLUMNS = [f"{axis}{i}" for i in range(1, 6) for axis in "xy"] + ["detection_confidence"]
# Options that say what to score or where to write: with none of them, score.py runs the demo.
SCORING_OPTIONS = ("image_path", "image_extension", "output_dir", "backbone", "weights", "path_replace",
                   "path_replace_with", "bgr2rgb", "recursive", "quality_group", "groups", "save_embeddings", "overwrite", "strict",
                   "align", "landmarks", "select_face", "save_aligned")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="score.py", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    official = parser.add_argument_group("options of the official extract_grafiqs.py (same meaning)")
    official.add_argument("--image-path", help="folder of aligned 112x112 face crops, or a single image file")
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
        "unaligned photos (grafiqs.data.align: five-point ArcFace alignment, exactly insightface's norm_crop)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.demo = not any(getattr(args, name) != parser.get_default(name) for name in SCORING_OPTIONS)
    try:
        return run(args)
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
        print(f"error: cannot write {where}: {error.strerror or error}. Batches already scored are kept in {log_dir(args)}; "
              "free space or choose a writable --output-dir, then rerun the same command to resume", file=sys.stderr)
        return 4


def log_dir(args) -> Path:
    from grafiqs.io.ledger import LOG_FOLDER

    return Path(args.output_dir or "outputs/scores") / LOG_FOLDER


def run(args: argparse.Namespace) -> int:
    # Heavy imports here so that --help and argument errors answer at once.
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from grafiqs.allocator import retain_freed_memory
    from grafiqs.data.folders import ImageFileDataset, ShardSampler, collate_images, list_images, parse_extensions
    from grafiqs.io.ledger import OutputFolder
    from grafiqs.hardware import bf16_units
    from grafiqs.lit.quality_module import GraFIQsModule
    from grafiqs.lit.writers import ResultLogWriter, read_result_logs
    from grafiqs.quality.scorer import GROUPS

    started = time.perf_counter()
    retain_freed_memory()  # 1.1-1.2x faster batches on CPU; see grafiqs/allocator.py
    check_options(args, GROUPS)
    output = OutputFolder(args.output_dir or "outputs/scores", advice=(
        "move them away (the demo always writes to outputs/demo; score your own folder with --image-path, --weights "
        "and --output-dir)" if args.demo else None))
    outputs = output_names(args)
    if is_primary_process():
        output.check(outputs, possible_outputs(args))  # before anything is created, the demo's synthetic set included
    if args.demo:
        prepare_demo(args)
    unlisted: list[tuple[str, str]] = []
    paths = list_images(args.image_path, parse_extensions(args.image_extension), args.recursive,
                        exclude=[p for p in (output.path, args.save_aligned) if p], unlisted=unlisted)
    accelerator, devices = choose_devices(args, torch)
    backbone = load_backbone_for(args)
    aligner = make_aligner(args) if aligning(args) else None

    settings = {
        "image_path": str(Path(args.image_path).resolve()),
        "image_extension": args.image_extension,
        "recursive": args.recursive,
        "weights_sha256": file_digest(args.weights, "weights file"),
        "architecture": list(backbone.layers_per_stage) + list(backbone.widths),
        "bgr2rgb": args.bgr2rgb,
        "precision": args.precision,
        "groups": list(args.groups),
        "alignment": {"detect": args.align, "select": args.select_face,
                      "landmarks_sha256": args.landmarks and file_digest(args.landmarks, "landmarks file")}
        if aligning(args) else None,
    }
    run_id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    if is_primary_process():  # DDP worker processes re-run this script: one process owns the folder
        output.claim(outputs, possible_outputs(args))
        start_or_resume(output, possible_outputs(args), settings, args.overwrite)
    current = {p: identity_of(p) for p in paths}
    done = read_result_logs(output.path, run_id, current, args.groups, with_embedding=args.save_embeddings)
    todo = [p for p in paths if "scores" not in done.get(p, {})]
    if len(todo) < len(paths):
        print(f"resuming: {len(paths) - len(todo)} of {len(paths)} images already scored in {output.path}")

    if todo:
        crops = plan_crops(args, todo) if args.save_aligned else None
        loader = DataLoader(
            ImageFileDataset(todo, bgr2rgb=args.bgr2rgb, aligner=aligner, save_aligned=crops),
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            collate_fn=collate_images,
            sampler=ShardSampler(len(todo)),
            persistent_workers=False,
        )
        writer = ResultLogWriter(output.path, todo, run_id, strict=args.strict)
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=args.num_nodes,
            strategy="ddp" if devices != 1 or args.num_nodes > 1 else "auto",
            inference_mode=False,  # gradients are the score
            use_distributed_sampler=False,  # ShardSampler: Lightning's refuses fewer images than processes
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[writer],
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning's own deprecation noise
            choice = compile_choice(args, torch, backbone, accelerator, -(-len(todo) // trainer.world_size),
                                    trainer.is_global_zero)
            module = GraFIQsModule(backbone, groups=args.groups, precision=args.precision,
                                   return_embeddings=args.save_embeddings, compile_choice=choice)
            try:
                trainer.predict(module, loader, return_predictions=False)
            except (SystemExit, KeyboardInterrupt):  # Lightning turns Ctrl-C into exit(1) after stopping its workers
                raise RunInterrupted(writer.stop_signal or 2) from None
        if not trainer.is_global_zero:
            return 0
    records = read_result_logs(output.path, run_id, current, args.groups, with_embedding=args.save_embeddings)
    scored = [p for p in paths if "scores" in records.get(p, {})]
    labels = demo_labels(Path(args.image_path), scored) if args.demo else None
    summary = write_final_files(output.path, paths, scored, records, args, labels, unlisted)
    output.remove(possible_outputs(args) - outputs)  # e.g. an embeddings.npy of an earlier run with --save-embeddings
    summary["seconds"] = time.perf_counter() - started
    summary["bf16_units"] = bf16_units(torch)
    summary["compile"] = module.compile_choice.report() if todo else None
    summary["measured_bf16"] = measured_bf16_speed(args, torch, backbone, accelerator)
    print_summary(summary, args, output.path)
    if args.demo:
        print_demo_report(output.path, summary["scored"], records, labels, summary["embeddings"])
    if not summary["magnitudes"]:
        print(f"error: 0 usable scores: {len(summary['failed'])} files were unreadable and {len(summary['not_finite'])} "
              "got NaN scores (see errors.csv and the status column of scores.csv)", file=sys.stderr)
        return 5
    return 0


def compile_choice(args, torch, backbone, accelerator: str, images: int, primary: bool):
    """How --compile decides for this run (grafiqs.hardware.CompileChoice); only the first process records speeds."""
    from grafiqs.hardware import CompileChoice, SpeedStore, cache_folder

    # inductor's compiled kernels beside the speeds, so a compilation is reused after /tmp is cleared
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_folder() / "inductor"))

    if args.compile == "on" and primary:
        print(f"compiling the network's stages for {images} images (--compile off skips it) ...", flush=True)
    return CompileChoice(args.compile, images, setting_key(args, torch, backbone, accelerator, args.precision),
                         SpeedStore() if primary else None, say=(lambda text: print(text, flush=True)) if primary else str)


def setting_key(args, torch, backbone, accelerator: str, precision: str) -> str:
    from grafiqs.hardware import speed_key

    device = "cuda" if accelerator in ("gpu", "cuda") else "cpu"
    return speed_key(torch, device, list(backbone.layers_per_stage) + list(backbone.widths), precision,
                     args.batch_size, args.groups[0])


def measured_bf16_speed(args, torch, backbone, accelerator: str) -> dict | None:
    """This machine's recorded bf16 and float32 seconds per image for this setting, when both were measured."""
    from grafiqs.hardware import SpeedStore

    store = SpeedStore()
    bf16, fp32 = (store.get(setting_key(args, torch, backbone, accelerator, p)) for p in ("bf16", "32"))
    fastest = lambda speeds: min((s for s in (speeds.eager, speeds.compiled) if s is not None), default=None)  # noqa: E731
    if fastest(bf16) is None or fastest(fp32) is None:
        return None
    return {"bf16_img_s": 1 / fastest(bf16), "fp32_img_s": 1 / fastest(fp32)}


def check_options(args, groups) -> None:
    """Refuse option values that cannot work, before anything is created."""
    from grafiqs.io.score_files import name_problem
    from grafiqs.models.iresnet import ARCHITECTURES

    if args.demo:
        args.output_dir, args.save_embeddings = "outputs/demo", True
    else:
        missing = [option for option, value in (("--image-path", args.image_path), ("--weights", args.weights))
                   if value is None]
        if missing:
            raise InputError(f"give {' and '.join(missing)} (a folder of aligned face crops or one image file; the "
                             "backbone state dict or train_fr.py checkpoint); the demo runs only without any scoring option")
    args.groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    unknown = [g for g in args.groups if g not in groups]
    if unknown or not args.groups:
        raise InputError(f"--groups takes a comma-separated subset of {', '.join(groups)}, not {', '.join(unknown) or 'nothing'}")
    args.groups = tuple(g for g in groups if g in args.groups)  # the official order
    args.quality_group = args.quality_group or ("image" if "image" in args.groups else args.groups[0])
    if args.quality_group not in args.groups:
        raise InputError(f"--quality-group must be one of the scored groups {', '.join(args.groups)}")
    if args.backbone is not None and args.backbone not in (*ARCHITECTURES, "custom"):
        raise InputError(f"unknown --backbone {args.backbone!r}; choose one of {', '.join(ARCHITECTURES)} or custom")
    if args.save_aligned and not aligning(args):
        raise InputError("--save-aligned saves aligned crops: add --align (detect faces) or --landmarks FILE")
    if args.output_dir == "" or args.save_aligned == "":
        raise InputError(f"--{'output-dir' if args.output_dir == '' else 'save-aligned'} is empty; give a folder path")
    if args.path_replace_with is not None and name_problem(args.path_replace_with):
        raise InputError(f"--path-replace-with cannot go into a score file: {name_problem(args.path_replace_with)}")


def aligning(args) -> bool:
    return bool(args.align or args.landmarks)


def make_aligner(args):
    """The FaceAligner of the options; the landmark file is read and checked here, before anything is created."""
    from grafiqs.data.align import FaceAligner, read_landmarks_file

    landmarks = read_landmarks_file(args.landmarks) if args.landmarks else None
    return FaceAligner(landmarks, select=args.select_face, detect=args.align)


def crop_names(paths: list[str], root: Path) -> dict[str, str]:
    """--save-aligned: each path's PNG name under the folder (its relative path, `.png` appended unless it is a PNG
    already); where two paths would share a name (`a.jpg` and `a.jpg.png`), the later one gets `a.jpg.2.png`."""
    names, taken = {}, set()
    for path in sorted(paths):
        name = os.path.relpath(path, root)
        stem = name[:-4] if name.lower().endswith(".png") else name
        candidate, count = stem + ".png", 1
        while candidate.lower() in taken:
            count += 1
            candidate = f"{stem}.{count}.png"
        taken.add(candidate.lower())
        names[path] = candidate
    return names


def plan_crops(args, paths: list[str]) -> dict[str, Path]:
    """Where each path's aligned crop goes: a folder the program owns like --output-dir (files it did not write are
    never replaced; every crop written is recorded in its ledger, by any process)."""
    from grafiqs.io.ledger import OutputFolder

    root = Path(args.image_path) if Path(args.image_path).is_dir() else Path(args.image_path).parent
    names = crop_names(paths, root)
    folder = OutputFolder(args.save_aligned, "--save-aligned")
    if is_primary_process():
        folder.claim(names.values())
    else:
        folder.attach()
    for name in names.values():
        (folder.path / name).parent.mkdir(parents=True, exist_ok=True)
    return {path: folder.path / name for path, name in names.items()}


def output_names(args) -> set[str]:
    """The files this run writes into --output-dir."""
    names = {f"GraFIQs_{group}.txt" for group in args.groups} | {"scores.csv", "errors.csv"}
    names |= {"embeddings.npy"} if args.save_embeddings else set()
    return names | ({"edc.png", "demo_table.csv", "demo_table.md"} if args.demo else set())


def possible_outputs(args) -> set[str]:
    """Every file some run of score.py writes into --output-dir: those of an earlier run that this one does not
    write are removed at its end (while still exactly as written), never other files of the program (crops)."""
    from grafiqs.quality.scorer import GROUPS

    return output_names(argparse.Namespace(groups=GROUPS, save_embeddings=True, demo=True))


def identity_of(path: str) -> list[int] | None:
    from grafiqs.data.folders import file_identity

    try:
        return file_identity(os.stat(path))
    except (OSError, ValueError):
        return None


def start_or_resume(output, stale: set[str], settings: dict, overwrite: bool) -> None:
    """Record the run's settings; refuse to mix with results of other settings unless --overwrite,
    which discards the earlier run's log and its files (`stale`, those still exactly as written)."""
    from grafiqs.io.atomic import atomic_write_text
    from grafiqs.io.ledger import read_state

    settings_file = output.log_dir / "settings.json"
    try:
        previous = json.loads(read_state(settings_file))
    except (OSError, ValueError):  # missing, empty or half-written: no usable settings
        previous = None
    logs = list(output.log_dir.glob("rank*.jsonl"))
    if overwrite:
        for log in logs:
            log.unlink()
        output.remove(stale)
    elif logs and previous != settings:
        if isinstance(previous, dict):
            changed = ", ".join(k for k in settings if previous.get(k) != settings[k]) or "format"
            reason = f"a run with other settings ({changed})"
        else:
            reason = "a run whose settings.json is unreadable"
        raise InputError(f"{output.path} holds results of {reason}; use another --output-dir, or --overwrite to "
                         "discard them")
    atomic_write_text(settings_file, json.dumps(settings, indent=1))


def prepare_demo(args) -> None:
    """Point args at the bundled model and a synthetic verification set (drawn on the first run)."""
    from grafiqs.experiments.demo import DEMO_SET, DEMO_WEIGHTS
    from grafiqs.experiments.synthetic_set import prepare_synthetic_set

    args.drawing = True
    folder = prepare_synthetic_set(Path(args.output_dir) / "images", DEMO_SET)
    args.drawing = False
    args.image_path, args.weights, args.save_embeddings = str(folder), str(DEMO_WEIGHTS), True
    if args.compile == "auto":
        args.compile = "off"  # the demo model is so small that compiling it costs more than it saves
    print(f"demo: scoring {DEMO_SET.size} synthetic faces in {folder} with the bundled model {DEMO_WEIGHTS.name} "
          "(score your own crops with --image-path and --weights)")


def demo_labels(folder: Path, scored: list[str]):
    """Manifest labels of the scored demo images, in scored order."""
    from grafiqs.experiments.synthetic_set import read_labels

    return read_labels(folder, [Path(p).name for p in scored])


def print_demo_report(output_dir: Path, scored: list[str], records: dict, labels, embeddings) -> None:
    import numpy as np

    from grafiqs.experiments.demo import report_demo
    from grafiqs.quality.scorer import GROUPS

    magnitudes = {g: np.array([records[p]["scores"][g] for p in scored]) for g in GROUPS}  # the demo scores all
    print()
    print(report_demo(output_dir, magnitudes, embeddings, labels))
    print(f"EDC plot: {output_dir / 'edc.png'}; table: {output_dir / 'demo_table.md'}")


def load_backbone_for(args):
    """The backbone of --weights; a project checkpoint's recorded colour order decides --bgr2rgb."""
    from grafiqs.models.loading import load_backbone_and_metadata

    backbone, metadata = load_backbone_and_metadata(args.backbone, args.weights)
    if metadata is not None:
        trained_rgb = metadata["colour_order"] == "rgb"
        if args.bgr2rgb and not trained_rgb:
            print(f"warning: {args.weights} was trained on BGR images, but --bgr2rgb feeds RGB", file=sys.stderr)
        args.bgr2rgb = args.bgr2rgb or trained_rgb
        args.colour_recorded = metadata["colour_order"]
    return backbone


def choose_devices(args, torch) -> tuple[str, int | str | list[int]]:
    """Lightning's accelerator and devices from the options, refusing what this machine cannot run.

    The official --gpu N picks one CUDA device; without CUDA it warns and uses the CPU instead of failing."""
    if args.gpu is not None:
        if torch.cuda.is_available():
            return "gpu", [args.gpu]
        print(f"warning: --gpu {args.gpu} given but no CUDA device is available; scoring on the CPU", file=sys.stderr)
        return "cpu", 1
    if args.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise InputError(f"--accelerator {args.accelerator}: no CUDA GPU is available here; use --accelerator cpu")
    if args.accelerator == "mps" and not torch.backends.mps.is_available():
        raise InputError("--accelerator mps: no Apple GPU is available here; use --accelerator cpu")
    on_cpu = args.accelerator == "cpu" or (args.accelerator == "auto" and not torch.cuda.is_available())
    if "," in args.devices:
        if on_cpu:
            raise InputError(f"--devices {args.devices}: device indices are for GPUs; on the CPU give a number of "
                             "processes, e.g. --devices 2")
        return args.accelerator, [int(d) for d in args.devices.split(",") if d.strip()]
    return args.accelerator, args.devices if args.devices == "auto" else int(args.devices)


def write_final_files(output_dir: Path, paths: list[str], scored: list[str], records: dict[str, dict], args,
                      labels=None, unlisted=()) -> dict:
    """Score files, scores.csv (plus identity/role/degradation/severity with `labels`), errors.csv, embeddings.npy."""
    import numpy as np

    from grafiqs.io.score_files import (atomic_write_npy, printable_path, quality_from_magnitude, replace_prefix,
                                        write_csv, write_score_file)
    from grafiqs.lit.writers import decode_embedding

    failed = [(printable_path(p), records[p]["error"]) for p in paths if p in records and "error" in records[p]]
    failed += [(printable_path(folder), reason) for folder, reason in unlisted]
    shown = {p: replace_prefix(p, args.path_replace, args.path_replace_with) for p in scored}
    for group in args.groups:
        write_score_file(output_dir / f"GraFIQs_{group}.txt", ((shown[p], records[p]["scores"][group]) for p in scored))
    label_columns = ["identity", "role", "degradation", "severity"] if labels is not None else []
    landmark_columns = LANDMARK_COLUMNS if aligning(args) else []
    write_csv(
        output_dir / "scores.csv",
        ["path", *args.groups, "bns_loss", "quality", "resized", "status", *landmark_columns, *label_columns],
        (
            [shown[p], *(records[p]["scores"][g] for g in args.groups), records[p]["bns_loss"],
             quality_from_magnitude(records[p]["scores"][args.quality_group]), int(records[p].get("resized", False)),
             records[p].get("status", "ok"),
             *([*records[p].get("landmarks", [math.nan] * 10), records[p].get("confidence", math.nan)]
               if landmark_columns else []),
             *(labels.rows[Path(p).name][c] for c in label_columns)]
            for p in scored
        ),
    )
    write_csv(output_dir / "errors.csv", ["path", "reason"], failed)
    embeddings = np.stack([decode_embedding(records[p]) for p in scored]) if args.save_embeddings and scored else None
    if embeddings is not None:
        atomic_write_npy(output_dir / "embeddings.npy", embeddings)
    return {
        "found": len(paths),
        "scored": scored,
        "failed": failed,
        "resized": [p for p in scored if records[p].get("resized")],
        "not_finite": [(p, records[p]["status"]) for p in scored if "status" in records[p]],
        "magnitudes": [records[p]["scores"][args.quality_group] for p in scored if "status" not in records[p]],
        "embeddings": embeddings,  # rows of the scored paths, with --save-embeddings
    }


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
    print(f"wrote GraFIQs_<group>.txt, scores.csv and errors.csv to {output_dir}")
