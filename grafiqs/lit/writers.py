"""Per-batch result logs that make scoring runs (score.py, the benchmark's passes) streaming, resumable, rank-aware.

Each rank appends one JSON line per image to `<output>/.grafiqs/rank<R>.jsonl`
and flushes after every batch, so nothing accumulates in memory and an
interrupted run keeps every finished batch. A later run with the same settings
reads the logs, skips what is done, and rank 0 rebuilds the final files from them.

Every record carries the digest of the run's settings (weights by content included) and
the scored file's [size, mtime]; a record counts only for the same settings and an
unchanged file, so a resumed run never mixes results of other weights or of replaced images.
"""
from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from grafiqs.io.ledger import LOG_FOLDER, open_state
from grafiqs.errors import ImageError
from grafiqs.quality.scorer import STATUS_MESSAGES, STATUS_OK

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BatchLogWriter(BasePredictionWriter):
    """Appends each batch's `records()` to this rank's log and syncs it to disk.

    `stop_signal` is the SIGINT/SIGTERM that stopped the run, if any. Lightning's own SIGTERM
    handler only notes the signal (the run would go on, a FIFO read would hang on), so while
    predicting both signals raise KeyboardInterrupt: Lightning then stops its worker processes
    and exits, and every batch written before stays in the log.
    """

    def __init__(self, output_dir: str | Path, run: str, strict: bool = False):
        super().__init__(write_interval="batch")
        self.log_dir = Path(output_dir) / LOG_FOLDER
        self.run = run  # settings digest stamped on every record
        self.strict = strict  # stop at the first unreadable file (after logging the batch)
        self.file = None
        self.stop_signal: int | None = None

    def records(self, prediction: dict, batch: dict) -> list[dict]:
        """The JSON records of one batch (results and errors), each stamped with `self.run`."""
        raise NotImplementedError

    def _stop(self, signum, frame) -> None:
        self.stop_signal = signum
        raise KeyboardInterrupt

    def on_predict_start(self, trainer, pl_module) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._stop)  # Lightning restores its predecessors at teardown
        self.log_dir.mkdir(parents=True, exist_ok=True)
        handle = open_state(self.log_dir / f"rank{trainer.global_rank}.jsonl", os.O_RDWR | os.O_CREAT | os.O_APPEND)
        size = os.fstat(handle).st_size
        needs_newline = size > 0 and os.pread(handle, 1, size - 1) != b"\n"
        self.file = os.fdopen(handle, "a", encoding="utf-8")
        if needs_newline:  # a killed run may have left half a line; start clean after it
            self.file.write("\n")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        lines = [json.dumps(record, allow_nan=True) for record in self.records(prediction, batch)]
        if lines:
            self.file.write("\n".join(lines) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())
        if self.strict and prediction["errors"]:
            raise ImageError(f"--strict: stopped at the first unusable file: {prediction['errors'][0][1]}")

    def on_predict_end(self, trainer, pl_module) -> None:
        self.file.close()
        self.file = None
        trainer.strategy.barrier()  # rank 0 merges the logs only after every rank has flushed its last batch


class ResultLogWriter(BatchLogWriter):
    """score.py's records: one per image, keyed by its path, with the file identity it was read from."""

    def __init__(self, output_dir: str | Path, paths: Sequence[str], run: str, strict: bool = False):
        super().__init__(output_dir, run, strict)
        self.paths = list(paths)

    def records(self, prediction: dict, batch: dict) -> list[dict]:
        records = []
        for row, index in enumerate(prediction["index"].tolist()):
            scores = {group: float(values[row]) for group, values in prediction["scores"].items()}
            record = {"path": self.paths[index], "run": self.run, "file": batch["file"][row], "scores": scores,
                      "bns_loss": float(prediction["bns_loss"][row]), **batch["alignment"][row]}
            if prediction["resized"][row]:
                record["resized"] = True
            if int(prediction["status"][row]) != STATUS_OK:
                record["status"] = STATUS_MESSAGES[int(prediction["status"][row])]
            if "embedding" in prediction:
                record["embedding"] = encode_array(prediction["embedding"][row])
            for reading in ("face_probability", "alignment_error"):  # the aligned-face check, when it ran
                if reading in prediction:
                    record[reading] = float(prediction[reading][row])
            records.append(record)
        return records + [{"path": self.paths[index], "run": self.run, "error": reason}
                          for index, reason in prediction["errors"]]


def log_records(output_dir: str | Path, run: str) -> Iterator[dict]:
    """The records of run `run` in a folder's rank logs, read line by line (a log may be larger than memory);
    half-written lines of a killed run and records of other runs are skipped."""
    for log in sorted((Path(output_dir) / LOG_FOLDER).glob("rank*.jsonl")):
        with os.fdopen(open_state(log, os.O_RDONLY | os.O_NONBLOCK), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("run") == run:
                    yield record


def encode_array(values) -> str:
    """A float32 vector as base64 of its bytes: exact, and a third of the size of JSON numbers."""
    return base64.b64encode(np.ascontiguousarray(values, dtype=np.float32).tobytes()).decode("ascii")


def decode_array(text: str) -> np.ndarray:
    """The float32 vector `encode_array` wrote."""
    return np.frombuffer(base64.b64decode(text), dtype=np.float32)


def decode_embedding(record: dict) -> np.ndarray:
    """The float32 embedding a record holds (written with --save-embeddings)."""
    return decode_array(record["embedding"])


def _is_score(record: dict, groups: Sequence[str], with_embedding: bool) -> bool:
    scores, file = record.get("scores"), record.get("file")
    return (isinstance(scores, dict) and all(isinstance(scores.get(g), (int, float)) for g in groups)
            and isinstance(record.get("bns_loss"), (int, float))
            and isinstance(file, list) and all(isinstance(v, int) for v in file)
            and (not with_embedding or isinstance(record.get("embedding"), str)))


def read_result_logs(output_dir: str | Path, run: str, current: dict[str, list[int]], groups: Sequence[str],
                     with_embedding: bool = False) -> dict[str, dict]:
    """Each path's usable record in the rank logs: a score of run `run` whose file identity is `current[path]`,
    else that run's error for the path. Half-written lines of a killed run, records of other runs or of
    files that changed since, and lines missing any field are ignored."""
    scored, failed = {}, {}
    for record in log_records(output_dir, run):
        path = record.get("path")
        if not isinstance(path, str) or path not in current:
            continue
        if _is_score(record, groups, with_embedding) and record["file"] == current[path]:
            scored[path] = record
        elif isinstance(record.get("error"), str):
            failed[path] = record
    return failed | scored
