"""Per-batch result log that makes scoring runs streaming, resumable and rank-aware.

Each rank appends one JSON line per image to `<output>/.grafiqs/rank<R>.jsonl`
and flushes after every batch, so nothing accumulates in memory and an
interrupted run keeps every finished batch. A later run with the same settings
reads the logs, skips what is done, and rank 0 rebuilds the final files from them.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from grafiqs.errors import ImageError
from grafiqs.quality.scorer import STATUS_MESSAGES, STATUS_OK

LOG_FOLDER = ".grafiqs"


class ResultLogWriter(BasePredictionWriter):
    def __init__(self, output_dir: str | Path, paths: Sequence[str], strict: bool = False):
        super().__init__(write_interval="batch")
        self.log_dir = Path(output_dir) / LOG_FOLDER
        self.paths = list(paths)
        self.strict = strict  # stop at the first unreadable file (after logging the batch)
        self.file = None

    def on_predict_start(self, trainer, pl_module) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"rank{trainer.global_rank}.jsonl"
        needs_newline = log.exists() and log.stat().st_size > 0 and not log.read_bytes().endswith(b"\n")
        self.file = open(log, "a", encoding="utf-8")
        if needs_newline:  # a killed run may have left half a line; start clean after it
            self.file.write("\n")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        lines = []
        for row, index in enumerate(prediction["index"].tolist()):
            scores = {group: float(values[row]) for group, values in prediction["scores"].items()}
            record = {"path": self.paths[index], "scores": scores, "bns_loss": float(prediction["bns_loss"][row])}
            if prediction["resized"][row]:
                record["resized"] = True
            if int(prediction["status"][row]) != STATUS_OK:
                record["status"] = STATUS_MESSAGES[int(prediction["status"][row])]
            if "embedding" in prediction:  # float32 bytes, base64: exact and a third of the size of JSON numbers
                record["embedding"] = base64.b64encode(prediction["embedding"][row].numpy().tobytes()).decode("ascii")
            lines.append(json.dumps(record, allow_nan=True))
        lines += [json.dumps({"path": self.paths[index], "error": reason}) for index, reason in prediction["errors"]]
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


def decode_embedding(record: dict) -> np.ndarray:
    """The float32 embedding a record holds (written with --save-embeddings)."""
    return np.frombuffer(base64.b64decode(record["embedding"]), dtype=np.float32)


def read_result_logs(output_dir: str | Path) -> dict[str, dict]:
    """Every path's latest record from all rank logs; half-written lines of a killed run are ignored."""
    records = {}
    for log in sorted((Path(output_dir) / LOG_FOLDER).glob("rank*.jsonl")):
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "path" in record:
                records[record["path"]] = record
    return records

