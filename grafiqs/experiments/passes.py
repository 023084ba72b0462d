"""Cached, resumable, distributed per-image passes: the benchmark runner's unit of work.

A pass is one computation over every image of one evaluation set: the GraFIQs variant grid,
a baseline FIQA method, or the embeddings of an FR model that judges the pairs. Its numbers
depend only on its settings (the set's content, the weights by SHA-256, the method and its
options), so each pass has a folder named by their digest:

    <cache_dir>/<set>/<model>/<method>-<digest>/
        .grafiqs/rank<R>.jsonl   while running: score.py's per-batch logs (one JSON line per image)
        values.npz               once complete: one array per output, row i = image i of the set
        pass.json                its settings, image count and seconds

An interrupted pass resumes from its logs; a finished one is loaded, never recomputed, also
by another config that shares it. Under DDP every process runs the same passes in the same
order (the same cache decides for all of them) and scores its share of the images; rank 0
merges the logs once every rank has written its last batch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from grafiqs.data.folders import ImageFileDataset
from grafiqs.io.ledger import LOG_FOLDER, OutputFolder, is_primary_process
from grafiqs.io.atomic import atomic_write_text, atomic_write_with
from grafiqs.io.score_files import safe_file_name
from grafiqs.errors import InputError
from grafiqs.lit.writers import BatchLogWriter, decode_array, encode_array, log_records

RESULT, SETTINGS = "values.npz", "pass.json"
MAX_NAMED_ERRORS = 5


@dataclass(frozen=True)
class PassSpec:
    """What a pass computes; `settings` holds everything its numbers depend on (JSON-serialisable)."""

    set_name: str
    model_name: str
    method: str
    settings: dict

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]

    def folder(self, cache_dir: str | Path) -> Path:
        return Path(cache_dir) / safe_file_name(self.set_name) / safe_file_name(self.model_name) / f"{safe_file_name(self.method)}-{self.digest}"


class PassImages(ImageFileDataset):
    """Item p: image `indices[p]` of a `VerificationSet` (encoded bytes or files), as ImageFileDataset serves it."""

    def __init__(self, images, indices, bgr2rgb: bool, aligner=None):
        super().__init__([], bgr2rgb=bgr2rgb, aligner=aligner)
        self.images = images
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, position: int) -> tuple[bytes, None, str]:
        index = self.indices[position]
        return self.images.read(index), None, self.images.image_source(index)


class PassLogWriter(BatchLogWriter):
    """One record per image: its index in the set, scalar outputs as numbers, vectors as float32 base64."""

    def __init__(self, folder: Path, indices: list[int], run: str):
        super().__init__(folder, run)
        self.indices = indices

    def records(self, prediction: dict, batch: dict) -> list[dict]:
        outputs = prediction["outputs"]
        records = []
        for row, position in enumerate(prediction["index"].tolist()):
            values = {name: float(v[row]) for name, v in outputs.items() if v.ndim == 1}
            arrays = {name: encode_array(v[row].numpy()) for name, v in outputs.items() if v.ndim == 2}
            records.append({"run": self.run, "index": self.indices[position], "values": values, "arrays": arrays})
        return records + [{"run": self.run, "index": self.indices[position], "error": reason}
                          for position, reason in prediction["errors"]]


def read_pass_logs(folder: Path, run: str, count: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict[int, str]]:
    """(outputs with NaN rows where missing, done flags [count], index -> error) from a pass's logs."""
    outputs: dict[str, np.ndarray] = {}
    done = np.zeros(count, dtype=bool)
    errors: dict[int, str] = {}
    for record in log_records(folder, run):
        index = record.get("index")
        if not isinstance(index, int) or not 0 <= index < count:
            continue
        if isinstance(record.get("error"), str):
            errors.setdefault(index, record["error"])
            continue
        values, arrays = record.get("values"), record.get("arrays")
        if not isinstance(values, dict) or not isinstance(arrays, dict):
            continue
        for name, value in values.items():
            outputs.setdefault(name, np.full(count, np.nan))[index] = value
        for name, text in arrays.items():
            vector = decode_array(text)
            outputs.setdefault(name, np.full((count, vector.size), np.nan, dtype=np.float32))[index] = vector
        done[index] = True
        errors.pop(index, None)
    return outputs, done, errors


@dataclass
class PassRunner:
    """Runs passes on Lightning (`devices`/`num_nodes` processes, DDP when more than one) into `cache_dir`."""

    cache_dir: Path
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    batch_size: int = 32
    num_workers: int = 1

    def __call__(self, spec: PassSpec, images, backbone, compute: Callable, bgr2rgb: bool,
                 aligner=None) -> dict[str, np.ndarray] | None:
        """The pass's outputs (rank 0; None on the other ranks), computed where not cached."""
        folder = spec.folder(self.cache_dir)
        primary = is_primary_process()
        if _finished(folder, spec):
            return dict(np.load(folder / RESULT)) if primary else None
        if primary:
            OutputFolder(folder, "benchmark cache folder").claim({RESULT, SETTINGS})
        started = time.perf_counter()
        count = images.num_images
        _, done, _ = read_pass_logs(folder, spec.digest, count)
        todo = np.flatnonzero(~done).tolist()
        if todo:
            label = f"{spec.set_name} / {spec.model_name} / {spec.method}"
            if primary:
                resumed = f" ({count - len(todo)} done before)" if len(todo) < count else ""
                print(f"pass {label}: {len(todo)} images{resumed}", flush=True)
            self._predict(folder, spec.digest, images, todo, backbone, compute, bgr2rgb, aligner)
        # every rank checks the merged logs (complete after the end-of-predict barrier): an error stops all
        # of them, not rank 0 alone with the others waiting for it in the next pass
        outputs, done, errors = read_pass_logs(folder, spec.digest, count)
        _synchronise()  # every rank has read the logs before rank 0 replaces them with values.npz
        if errors:
            named = "; ".join(errors[i] for i in sorted(errors)[:MAX_NAMED_ERRORS])
            raise InputError(f"{len(errors)} images of set {spec.set_name} could not be used: {named}. The scored "
                             f"batches are kept in {folder}; fix the files and rerun to resume")
        if not done.all():
            raise InputError(f"pass {spec.method} on set {spec.set_name} is missing {int((~done).sum())} images: "
                             "a process stopped early; rerun to resume")
        if not primary:
            return None
        atomic_write_with(folder / RESULT, lambda file: np.savez(file, **outputs))
        atomic_write_text(folder / SETTINGS, json.dumps(
            {"settings": spec.settings, "images": count, "seconds": time.perf_counter() - started}, indent=1))
        for log in (folder / LOG_FOLDER).glob("rank*.jsonl"):  # merged into values.npz
            log.unlink()
        return outputs

    def _predict(self, folder, run, images, todo, backbone, compute, bgr2rgb, aligner) -> None:
        from grafiqs.lit.quality_module import PassModule
        from grafiqs.pipeline.predict import predict

        # one Trainer per pass: its start-up notes (accelerators, tips) would repeat dozens of times
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
        predict(PassImages(images, todo, bgr2rgb, aligner), PassLogWriter(folder, todo, run),
                lambda trainer: PassModule(backbone, compute), accelerator=self.accelerator, devices=self.devices,
                num_nodes=self.num_nodes, batch_size=self.batch_size, num_workers=self.num_workers)


def _synchronise() -> None:
    """A barrier of the DDP processes, once Lightning has started them (a no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _finished(folder: Path, spec: PassSpec) -> bool:
    try:
        recorded = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("settings") == spec.settings and (folder / RESULT).is_file()
