"""Score files in the formats the field uses, written atomically.

- `GraFIQs_<group>.txt`: one `<path> <score>` line per image, the official GraFIQs and
  CR-FIQA layout, with the raw gradient magnitude (larger = lower quality).
- `scores.csv`: every group's raw magnitude, the BNS loss and `quality` (higher = better).
- `errors.csv`: every file that was skipped, with the reason.
"""
from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npy(path: str | Path, array) -> None:
    """`numpy.save` of `array` to `path`, atomically."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def replace_prefix(path: str, prefix: str | None, replacement: str | None) -> str:
    """The official --path-replace/--path-replace-with: swap a leading prefix of the written path."""
    if prefix and path.startswith(prefix):
        return (replacement or "") + path[len(prefix):]
    return path


def quality_from_magnitude(magnitude: float) -> float:
    """Higher is better: -log10 of the raw magnitude (only the order carries meaning)."""
    if math.isnan(magnitude):
        return math.nan
    return -math.log10(magnitude) if magnitude > 0 else math.inf


def write_score_file(path: str | Path, rows: Iterable[tuple[str, float]]) -> None:
    atomic_write_text(path, "".join(f"{name} {float(score)!r}\n" for name, score in rows))


def read_score_file(path: str | Path) -> dict[str, float]:
    """`<path> <score>` lines -> {path: score}; the path may contain spaces (split at the last one)."""
    scores = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            scores[name] = float(value)
        except ValueError:
            raise ValueError(f"{path}:{number}: expected '<path> <score>', got {line!r}") from None
    return scores


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
