"""`score.py`: GraFIQs scores for a folder of aligned face crops, a drop-in for the authors' extract_grafiqs.py."""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from grafiqs.errors import GrafiqsError, ImageError, InputError

# --compile auto compiles from this many images to score. iresnet50 on 2 cores: compiling saves ~13 ms
# per float32 image (6.5 -> 7.1 img/s) and ~34 ms per bf16 image (9.5 -> 14 img/s), against ~85 s for a
# cold compilation (~20 s cached): it repays itself after ~6,500 / ~1,500 (cached) float32 images and
# ~2,500 / ~600 bf16 images.
COMPILE_AUTO_IMAGES = {"32": 5000, "bf16": 1500}

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
  scores.csv    path, every group's magnitude, bns_loss, quality (higher = better), resized
  embeddings.npy  with --save-embeddings: float32 [N, D], rows in the order of scores.csv
  errors.csv    every skipped file and why
  .grafiqs/     per-batch result log: rerunning the same command resumes an interrupted run

examples:
  python score.py --image-path crops/ --weights 181952backbone.pth --backbone iresnet100 --output-dir out/
  python score.py --image-path crops/ --image-extension jpg,png --recursive --bgr2rgb --weights backbone.pth
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    official.add_argument("--gpu", type=int, help="CUDA device index; without a GPU the run falls back to the CPU")
    official.add_argument("--path-replace", help="prefix of the image paths to replace in the score files")
    official.add_argument("--path-replace-with", help="string that replaces the --path-replace prefix")
    official.add_argument(
        "--bgr2rgb",
        action="store_true",
        help="feed RGB instead of OpenCV's BGR (the official default is BGR; insightface-trained models expect RGB)",
    )
    extra = parser.add_argument_group("additional options")
    extra.add_argument("--recursive", action="store_true", help="also score images in sub-folders (default: flat)")
    extra.add_argument("--batch-size", type=int, default=16, help="images per forward/backward (default: 16)")
    extra.add_argument("--num-workers", type=int, default=1, help="DataLoader processes decoding images (default: 1)")
    extra.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default: auto)")
    extra.add_argument("--devices", default="1", help="number of devices/processes, or a list like 0,1 (default: 1)")
    extra.add_argument("--num-nodes", type=int, default=1, help="machines for multi-node DDP (default: 1)")
    extra.add_argument(
        "--quality-group", default="image", help="group whose magnitude becomes the `quality` column (default: image)"
    )
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
        help="torch.compile the network's stages: ~1.1-1.2x faster per float32 image (same math within 1e-4 relative), "
        "~1.4x per bf16 image, after a one-time compilation of ~85 s for iresnet50 on 2 CPU cores (~20 s once "
        f"cached). auto: on from {COMPILE_AUTO_IMAGES['32']} images to score ({COMPILE_AUTO_IMAGES['bf16']} with "
        "--precision bf16), where it repays itself (default: auto)",
    )
    extra.add_argument(
        "--save-embeddings", action="store_true", help="also write the FR embeddings of the same forward pass (embeddings.npy)"
    )
    extra.add_argument("--overwrite", action="store_true", help="discard results of a different run in --output-dir")
    extra.add_argument(
        "--strict", action="store_true",
        help="stop with exit code 3 at the first unreadable image (default: skip it, list it in errors.csv, go on)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ImageError as error:  # only --strict turns a bad image into an error
        print(f"error: {error}\nthe scored batches are kept: rerun without --strict to skip bad files and resume",
              file=sys.stderr)
        return 3
    except GrafiqsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # read-only folder, full disk, ...: name the file, keep what is done
        where = error.filename or args.output_dir or "the output folder"
        print(f"error: cannot write {where}: {error.strerror or error}. Batches already scored are kept in "
              f"{Path(args.output_dir or 'outputs/scores') / '.grafiqs'}; free space or choose a writable --output-dir, "
              "then rerun the same command to resume", file=sys.stderr)
        return 4


def run(args: argparse.Namespace) -> int:
    # Heavy imports here so that --help and argument errors answer at once.
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from grafiqs.allocator import retain_freed_memory
    from grafiqs.data.folders import ImageFileDataset, collate_images, list_images, parse_extensions
    from grafiqs.lit.quality_module import GraFIQsModule
    from grafiqs.lit.writers import ResultLogWriter, read_result_logs
    from grafiqs.quality.scorer import GROUPS

    started = time.perf_counter()
    retain_freed_memory()  # 1.1-1.2x faster batches on CPU; see grafiqs/allocator.py
    if args.quality_group not in GROUPS:
        raise InputError(f"--quality-group must be one of {', '.join(GROUPS)}")
    demo = args.image_path is None and args.weights is None
    if demo:
        prepare_demo(args)
    elif args.image_path is None:
        raise InputError("give --image-path (a folder of aligned face crops or one image file)")
    elif args.weights is None:
        raise InputError("give --weights, the backbone state dict (.pth) to score with")
    output_dir = Path(args.output_dir or "outputs/scores")
    paths = list_images(args.image_path, parse_extensions(args.image_extension), args.recursive)
    backbone = load_backbone_for(args)

    settings = {
        "image_path": str(Path(args.image_path).resolve()),
        "image_extension": args.image_extension,
        "recursive": args.recursive,
        "weights": str(Path(args.weights).resolve()),
        "architecture": list(backbone.layers_per_stage) + list(backbone.widths),
        "bgr2rgb": args.bgr2rgb,
        "precision": args.precision,
        "save_embeddings": args.save_embeddings,
    }
    check_or_record_settings(output_dir, settings, args.overwrite)
    done = {path for path, record in read_result_logs(output_dir).items() if "scores" in record}
    todo = [path for path in paths if path not in done]
    if done:
        print(f"resuming: {len(paths) - len(todo)} of {len(paths)} images already scored in {output_dir}")

    accelerator, devices = choose_devices(args, torch)
    if todo:
        loader = DataLoader(
            ImageFileDataset(todo, bgr2rgb=args.bgr2rgb),
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            collate_fn=collate_images,
            persistent_workers=False,
        )
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=args.num_nodes,
            strategy="ddp" if devices != 1 or args.num_nodes > 1 else "auto",
            inference_mode=False,  # gradients are the score
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[ResultLogWriter(output_dir, todo, strict=args.strict)],
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning's own deprecation noise
            compile_stages = args.compile == "on" or (
                args.compile == "auto" and len(todo) >= COMPILE_AUTO_IMAGES[args.precision])
            if compile_stages and trainer.is_global_zero:
                print(f"compiling the network's stages for {len(todo)} images (--compile off skips it) ...", flush=True)
            module = GraFIQsModule(backbone, precision=args.precision, return_embeddings=args.save_embeddings,
                                   compile=compile_stages)
            trainer.predict(module, loader, return_predictions=False)
        if not trainer.is_global_zero:
            return 0
    records = read_result_logs(output_dir)
    scored = [p for p in paths if "scores" in records.get(p, {})]
    labels = demo_labels(Path(args.image_path), scored) if demo else None
    summary = write_final_files(output_dir, paths, scored, records, args, labels)
    summary["seconds"] = time.perf_counter() - started
    print_summary(summary, args, output_dir)
    if demo:
        print_demo_report(output_dir, summary["scored"], records, labels, summary["embeddings"])
    return 0


def prepare_demo(args) -> None:
    """Point args at the bundled model and a synthetic verification set (drawn on the first run)."""
    from grafiqs.experiments.demo import DEMO_SET, DEMO_WEIGHTS
    from grafiqs.experiments.synthetic_set import prepare_synthetic_set

    args.output_dir = args.output_dir or "outputs/demo"
    folder = prepare_synthetic_set(Path(args.output_dir) / "images", DEMO_SET)
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

    magnitudes = {g: np.array([records[p]["scores"][g] for p in scored]) for g in GROUPS}
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


def choose_devices(args, torch) -> tuple[str, int | list[int]]:
    """The official --gpu N picks one CUDA device; without CUDA we warn and use the CPU instead of failing."""
    if args.gpu is not None:
        if torch.cuda.is_available():
            return "gpu", [args.gpu]
        print(f"warning: --gpu {args.gpu} given but no CUDA device is available; scoring on the CPU", file=sys.stderr)
        return "cpu", 1
    devices = args.devices
    parsed = [int(d) for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    return args.accelerator, parsed


def check_or_record_settings(output_dir: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to mix results of different settings in one output folder, unless --overwrite."""
    from grafiqs.lit.writers import LOG_FOLDER

    log_dir = output_dir / LOG_FOLDER
    settings_file = log_dir / "settings.json"
    if settings_file.exists():
        previous = json.loads(settings_file.read_text())
        if previous != settings:
            if not overwrite:
                changed = ", ".join(k for k in settings if previous.get(k) != settings[k])
                raise InputError(
                    f"{output_dir} holds results of a run with other settings ({changed}); "
                    "use another --output-dir, or --overwrite to discard them"
                )
            for log in log_dir.glob("rank*.jsonl"):
                log.unlink()
    log_dir.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings, indent=1))


def write_final_files(output_dir: Path, paths: list[str], scored: list[str], records: dict[str, dict], args,
                      labels=None) -> dict:
    """Score files, scores.csv (plus identity/role/degradation/severity with `labels`), errors.csv, embeddings.npy."""
    import numpy as np

    from grafiqs.data.score_files import atomic_write_npy, quality_from_magnitude, replace_prefix, write_csv, write_score_file
    from grafiqs.lit.writers import decode_embedding
    from grafiqs.quality.scorer import GROUPS

    failed = [(p, records[p]["error"]) for p in paths if p in records and "error" in records[p]]
    shown = {p: replace_prefix(p, args.path_replace, args.path_replace_with) for p in paths}
    for group in GROUPS:
        write_score_file(output_dir / f"GraFIQs_{group}.txt", ((shown[p], records[p]["scores"][group]) for p in scored))
    label_columns = ["identity", "role", "degradation", "severity"] if labels is not None else []
    write_csv(
        output_dir / "scores.csv",
        ["path", *GROUPS, "bns_loss", "quality", "resized", "status", *label_columns],
        (
            [shown[p], *(records[p]["scores"][g] for g in GROUPS), records[p]["bns_loss"],
             quality_from_magnitude(records[p]["scores"][args.quality_group]), int(records[p].get("resized", False)),
             records[p].get("status", "ok"),
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
            "expects aligned 112x112 face crops, and a resized full photo scores nonsense",
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
    print(f"wrote GraFIQs_<group>.txt, scores.csv and errors.csv to {output_dir}")
