"""The scoring run of score.py: options -> settings -> engine -> writers -> summary.

`run_scoring(args)` checks the options, lists the images, loads the weights, records the run's
settings in the output folder (its ledger refuses to touch files that are not the program's),
scores what its per-batch logs do not hold yet on Lightning (`grafiqs.pipeline.predict`), and
writes the final files from the logs. It returns the summary that `grafiqs.cli.score` prints;
printing and exit codes are the CLI's.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from grafiqs.errors import ImageError, InputError
from grafiqs.io.ledger import OutputFolder, is_primary_process
from grafiqs.io.reading import file_digest

# scores.csv columns with --align / --landmarks: the five points used (x1 y1 = left eye ... x5 y5 = right mouth
# corner, in the photo's pixels) and MTCNN's confidence (NaN for landmarks from a file).
GRADIENT_MAPS = 16  # --save-gradient-maps without --gradient-maps: the 16 lowest-quality images
LANDMARK_COLUMNS = [f"{axis}{i}" for i in range(1, 6) for axis in "xy"] + ["detection_confidence"]
DEMO_ADVICE = ("move them away (the demo always writes to outputs/demo; score your own folder with --image-path, "
               "--weights and --output-dir)")
DEMO_SET_ADVICE = ("move them away, or run the demo in another working folder (it always draws its set into "
                   "outputs/demo/images there; score your own folder with --image-path and --weights)")


def run_scoring(args: argparse.Namespace, say: Callable[[str], None] = print) -> dict | None:
    """Score the images of `args` (score.py's options) into its output folder; the summary, or None on DDP ranks
    other than the first. Raises the project's errors (bad input, --strict, interruption) for the CLI to report."""
    import torch

    from grafiqs.allocator import retain_freed_memory
    from grafiqs.data.folders import ImageFileDataset, list_images, parse_extensions
    from grafiqs.hardware import bf16_units
    from grafiqs.lit.quality_module import GraFIQsModule
    from grafiqs.lit.writers import ResultLogWriter, log_records, read_result_logs
    from grafiqs.pipeline.predict import predict
    from grafiqs.pipeline.readable import ReadableRun
    from grafiqs.quality.scorer import GROUPS

    started = time.perf_counter()
    retain_freed_memory()  # 1.1-1.2x faster batches on CPU; see grafiqs/allocator.py
    check_options(args, GROUPS)
    output = OutputFolder(args.output_dir or "outputs/scores", advice=DEMO_ADVICE if args.demo else None)
    outputs, stale = output_names(args), possible_outputs(args)
    if args.demo:
        if is_primary_process():
            output.check(outputs, stale)  # before the synthetic set is drawn (claim checks again, for every run)
        prepare_demo(args, say)
    unlisted: list[tuple[str, str]] = []
    container = open_input_container(args)  # a RecordIO set, RecordIO shards or a .bin: scored in place
    paths = container.names() if container is not None else list_images(
        args.image_path, parse_extensions(args.image_extension), args.recursive,
        exclude=[p for p in (output.path, args.save_aligned, args.save_gradient_maps) if p], unlisted=unlisted)
    accelerator, devices = choose_devices(args, torch)
    refuse_compiled_bf16_on_gpu(args, on_gpu(accelerator, torch))
    backbone = load_backbone_for(args)
    aligner = make_aligner(args) if aligning(args) else None
    readable = ReadableRun(args, paths)  # the calibration (checked) and the aligned-face check
    settings = run_settings(args, backbone, accelerator, torch)
    run_id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    maps = plan_gradient_maps(args, paths) if args.save_gradient_maps and is_primary_process() else None
    if is_primary_process():  # DDP worker processes re-run this script: one process owns the folder
        output.claim(outputs, stale)
        start_or_resume(output, stale, settings, args.overwrite)
        if maps is not None:
            maps.folder.claim(maps.names.values())
    current = container.identities() if container is not None else {p: identity_of(p) for p in paths}
    done = read_result_logs(output.path, run_id, current, args.groups, with_embedding=args.save_embeddings)
    todo = [p for p in paths if "scores" not in done.get(p, {})]
    if len(todo) < len(paths):
        say(f"resuming: {len(paths) - len(todo)} of {len(paths)} images already scored in {output.path}")

    module = None
    if todo:
        crops = plan_crops(args, todo, done) if args.save_aligned else None

        def make_module(trainer):
            choice = compile_choice(args, torch, backbone, accelerator, -(-len(todo) // trainer.world_size),
                                    trainer.is_global_zero)
            return GraFIQsModule(backbone, groups=args.groups, precision=args.precision,
                                 channels_last=runs_channels_last(args, args.precision, accelerator, torch),
                                 return_embeddings=args.save_embeddings, compile_choice=choice,
                                 face_check=readable.face_check)

        try:
            images = container.dataset if container is not None else ImageFileDataset
            trainer = predict(images(todo, bgr2rgb=args.bgr2rgb, aligner=aligner, save_aligned=crops),
                              ResultLogWriter(output.path, todo, run_id, strict=args.strict), make_module,
                              accelerator=accelerator, devices=devices, num_nodes=args.num_nodes,
                              batch_size=args.batch_size, num_workers=args.num_workers)
        except RuntimeError:
            stopped = args.strict and next((r["error"] for r in log_records(output.path, run_id) if "error" in r), None)
            if not stopped:
                raise
            # another DDP process stopped at a bad file under --strict; this one sees only its peer gone
            raise ImageError(f"--strict: another process stopped at the first unusable file: {stopped}") from None
        if not trainer.is_global_zero:
            return None
        module = trainer.lightning_module
    records = read_result_logs(output.path, run_id, current, args.groups, with_embedding=args.save_embeddings)
    scored = [p for p in paths if "scores" in records.get(p, {})]
    readable.fit(output.path, scored, records)  # --calibrate REFERENCE_FOLDER: the mapping of this run's scores
    labels = demo_labels(Path(args.image_path), scored) if args.demo else None
    summary = write_final_files(output.path, paths, scored, records, args, labels, unlisted,
                                record_labels=container is not None and container.has_labels, readable=readable)
    def read_again(chosen):  # the images of `chosen` as scored, for --contact-sheet and --save-gradient-maps
        images = container.dataset if container is not None else ImageFileDataset
        return images(chosen, bgr2rgb=args.bgr2rgb, aligner=aligner)

    readable.write_contact_sheet(output.path, scored, records, backbone, read_again)
    readable.write_gradient_maps(maps, scored, records, backbone, read_again)
    output.remove(stale - outputs)  # e.g. an embeddings.npy of an earlier run with --save-embeddings
    summary.update(seconds=time.perf_counter() - started, bf16_units=bf16_units(torch), records=records,
                   labels=labels, output_dir=output.path,
                   compile=module.compile_choice.report() if module is not None else None,
                   measured_bf16=measured_bf16_speed(args, torch, backbone, accelerator))
    return summary


def run_settings(args, backbone, accelerator: str, torch) -> dict:
    """Everything the scores depend on (the weights and landmark file by content): the run's digest."""
    return {
        "image_path": str(Path(args.image_path).resolve()),
        "image_extension": args.image_extension,
        "recursive": args.recursive,
        "weights_sha256": file_digest(args.weights, "weights file"),
        "architecture": list(backbone.layers_per_stage) + list(backbone.widths),
        "bgr2rgb": args.bgr2rgb,
        "precision": args.precision,
        # ~1e-5 apart, not bit for bit: never mixed
        **({"channels_last": True} if runs_channels_last(args, args.precision, accelerator, torch) else {}),
        "groups": list(args.groups),
        "alignment": {"detect": args.align, "select": args.select_face,
                      "landmarks_sha256": args.landmarks and file_digest(args.landmarks, "landmarks file")}
        if aligning(args) else None,
    }


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

    device = "cuda" if on_gpu(accelerator, torch) else "cpu"
    return speed_key(torch, device, list(backbone.layers_per_stage) + list(backbone.widths), precision,
                     args.batch_size, args.groups[0], runs_channels_last(args, precision, accelerator, torch))


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
    from grafiqs.pipeline.readable import check_readable_options

    check_readable_options(args)  # --calibrate REFERENCE_FOLDER becomes the input
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
    for option in ("output_dir", "save_aligned", "save_gradient_maps"):
        if getattr(args, option) == "":
            raise InputError(f"--{option.replace('_', '-')} is empty; give a folder path")
    if args.gradient_maps is not None and not args.save_gradient_maps:
        raise InputError("--gradient-maps counts the maps of --save-gradient-maps DIR: add it, or leave it out")
    args.gradient_maps = GRADIENT_MAPS if args.gradient_maps is None else args.gradient_maps
    if args.gradient_maps < 0:
        raise InputError(f"--gradient-maps must be 0 (all) or a positive count, got {args.gradient_maps}")
    if args.save_gradient_maps and args.save_aligned and same_folder(args.save_gradient_maps, args.save_aligned):
        raise InputError("--save-gradient-maps and --save-aligned name the same folder, where a map and a crop would "
                         "share a name: give two folders")
    if args.path_replace_with is not None and name_problem(args.path_replace_with):
        raise InputError(f"--path-replace-with cannot go into a score file: {name_problem(args.path_replace_with)}")


def aligning(args) -> bool:
    return bool(args.align or args.landmarks)


def make_aligner(args):
    """The FaceAligner of the options; the landmark file is read and checked here, before anything is created."""
    from grafiqs.faces.align import FaceAligner, read_landmarks_file

    landmarks = read_landmarks_file(args.landmarks) if args.landmarks else None
    return FaceAligner(landmarks, select=args.select_face, detect=args.align)


def crop_names(paths: list[str], root: Path, taken_names: Iterable[str] = ()) -> dict[str, str]:
    """--save-aligned: each path's PNG name under the folder (its relative path, `.png` appended unless it is a PNG
    already); where two paths would share a name (`a.jpg` and `a.jpg.png`), the later one gets `a.jpg.2.png`, and
    so does one whose name `taken_names` holds (the crops of images an earlier run saved)."""
    names, taken = {}, {name.lower() for name in taken_names}
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


def plan_crops(args, paths: list[str], done: dict[str, dict]) -> dict[str, Path]:
    """Where each path's aligned crop goes: a folder the program owns like --output-dir (files it did not write are
    never replaced; every crop written is recorded in its ledger, by any process). The crops of images scored
    before (`done`: their log records name them) keep their names, which no other image's crop takes."""
    from grafiqs.io.ledger import OutputFolder

    root = Path(args.image_path) if Path(args.image_path).is_dir() else Path(args.image_path).parent
    folder = OutputFolder(args.save_aligned, "--save-aligned")
    saved = (os.path.relpath(record["crop"], folder.path) for record in done.values() if "scores" in record
             and isinstance(record.get("crop"), str))
    names = crop_names(paths, root, [name for name in saved if Path(name).parts[0] != ".."])
    if is_primary_process():
        folder.claim(names.values())
    else:
        folder.attach()
    for name in names.values():
        (folder.path / name).parent.mkdir(parents=True, exist_ok=True)
    return {path: folder.path / name for path, name in names.items()}


def same_folder(first: str, second: str) -> bool:
    return os.path.realpath(first) == os.path.realpath(second)


def plan_gradient_maps(args, paths: list[str]):
    """--save-gradient-maps: a folder the program owns like --output-dir, checked (and then claimed) for every image's
    name (its relative path as PNG, as --save-aligned names crops); the maps are written once the scores are known."""
    from grafiqs.io.ledger import OutputFolder
    from grafiqs.pipeline.readable import GradientMaps

    root = Path(args.image_path) if Path(args.image_path).is_dir() else Path(args.image_path).parent
    maps = GradientMaps(OutputFolder(args.save_gradient_maps, "--save-gradient-maps"), crop_names(paths, root))
    maps.folder.check(maps.names.values())
    return maps


def output_names(args) -> set[str]:
    """The files this run writes into --output-dir."""
    from grafiqs.pipeline.readable import readable_outputs

    names = {f"GraFIQs_{group}.txt" for group in args.groups} | {"scores.csv", "errors.csv"}
    names |= {"embeddings.npy"} if args.save_embeddings else set()
    names |= readable_outputs(args)  # --scalar-score-files, --ofiq-csv, --calibrate
    return names | ({"edc.png", "demo_table.csv", "demo_table.md"} if args.demo else set())


def possible_outputs(args) -> set[str]:
    """Every file some run of score.py writes into --output-dir: those of an earlier run that this one does not
    write are removed at its end (while still exactly as written), never other files of the program (crops)."""
    from grafiqs.quality.scorer import GROUPS

    return output_names(argparse.Namespace(groups=GROUPS, save_embeddings=True, demo=True, scalar_score_files=True,
                                           ofiq_csv=True, calibrate="reference", contact_sheet=True))


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
            keys = [*settings, *(k for k in previous if k not in settings)]  # a setting either run lacks counts too
            changed = ", ".join(k for k in keys if previous.get(k) != settings.get(k)) or "format"
            reason = f"a run with other settings ({changed})"
        else:
            reason = "a run whose settings.json is unreadable"
        raise InputError(f"{output.path} holds results of {reason}; use another --output-dir, or --overwrite to "
                         "discard them")
    atomic_write_text(settings_file, json.dumps(settings, indent=1))


def prepare_demo(args, say: Callable[[str], None] = print) -> None:
    """Point args at the bundled model and a synthetic verification set (drawn on the first run)."""
    from grafiqs.experiments.demo import DEMO_SET, DEMO_WEIGHTS
    from grafiqs.synthetic.drawn_set import prepare_synthetic_set

    args.drawing = True
    folder = prepare_synthetic_set(Path(args.output_dir) / "images", DEMO_SET, advice=DEMO_SET_ADVICE)
    args.drawing = False
    args.image_path, args.weights, args.save_embeddings = str(folder), str(DEMO_WEIGHTS), True
    if args.compile == "auto":
        args.compile = "off"  # the demo model is so small that compiling it costs more than it saves
    say(f"demo: scoring {DEMO_SET.size} synthetic faces in {folder} with the bundled model {DEMO_WEIGHTS.name} "
          "(score your own crops with --image-path and --weights)")


def demo_labels(folder: Path, scored: list[str]):
    """Manifest labels of the scored demo images, in scored order."""
    from grafiqs.synthetic.drawn_set import read_labels

    return read_labels(folder, [Path(p).name for p in scored])


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


def runs_channels_last(args, precision: str, accelerator: str, torch) -> bool:
    """--channels-last auto is on for bf16 on a CPU: there oneDNN's bf16 convolutions otherwise reorder NCHW around
    every call (1.07-1.25x on an AMD EPYC with AVX512-BF16), while on an H200 NCHW bf16 was faster (benchmarks/RESULTS.md)."""
    if args.channels_last == "auto":
        return precision == "bf16" and not on_gpu(accelerator, torch)
    return args.channels_last == "on"


def refuse_compiled_bf16_on_gpu(args, gpu: bool) -> None:
    """Compiled bf16 stages gave wrong scores on a GPU: --compile on is refused there, and auto stays eager."""
    from grafiqs.quality.groups import COMPILED_BF16_ON_GPU

    if gpu and args.precision == "bf16" and args.compile != "off":
        if args.compile == "on":
            raise InputError(f"--precision bf16 --compile on: {COMPILED_BF16_ON_GPU}")
        args.compile = "off"


def on_gpu(accelerator: str, torch) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


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
                      labels=None, unlisted=(), record_labels: bool = False, *, readable) -> dict:
    """Score files, scores.csv (plus identity/role/degradation/severity with `labels`), errors.csv, embeddings.npy;
    `readable` (grafiqs.pipeline.readable.ReadableRun) adds quality_0_100, the face check and its own files."""
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
    record_label_columns = ["label"] if record_labels else []  # a RecordIO record's identity label
    landmark_columns = LANDMARK_COLUMNS if aligning(args) else []
    write_csv(
        output_dir / "scores.csv",
        ["path", *args.groups, "bns_loss", "quality", "quality_0_100", "resized", "status", "face_probability",
         "alignment_error", *landmark_columns, *label_columns, *record_label_columns],
        (
            [shown[p], *(records[p]["scores"][g] for g in args.groups), records[p]["bns_loss"],
             quality_from_magnitude(records[p]["scores"][args.quality_group]),
             readable.scalar(records[p], args.quality_group), int(records[p].get("resized", False)),
             readable.status(records[p]), *readable.face(records[p]),
             *([*records[p].get("landmarks", [math.nan] * 10), records[p].get("confidence", math.nan)]
               if landmark_columns else []),
             *(labels.rows[Path(p).name][c] for c in label_columns),
             *(records[p].get("label", "") for _ in record_label_columns)]
            for p in scored
        ),
    )
    write_csv(output_dir / "errors.csv", ["path", "reason"], failed)
    readable.write_files(output_dir, scored, shown, records)  # --scalar-score-files, --ofiq-csv
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
        "readable": readable,  # calibration, face-check flags and notes, for the summary
    }


def open_input_container(args):
    """The container --image-path names (grafiqs.data.containers: a RecordIO set, a folder of RecordIO shards, a
    .bin), checked before anything is created; None for a folder of images or an image file."""
    from grafiqs.data.containers import open_container

    container = open_container(args.image_path)
    if container is not None:
        given = [option for option, value in (("--recursive", args.recursive), ("--image-extension", args.image_extension))
                 if value]
        if given:
            raise InputError(f"{' and '.join(given)} select image files in folders; {args.image_path} is a "
                             f"{container.kind} container whose every image record is scored: leave them out")
    return container
