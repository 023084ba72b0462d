"""Score files in the formats the field uses, written atomically.

- `GraFIQs_<group>.txt`: one `<path> <score>` line per image, the official GraFIQs and
  CR-FIQA layout, with the raw gradient magnitude (larger = lower quality).
- `scores.csv`: every group's raw magnitude, the BNS loss and `quality` (higher = better).
- `errors.csv`: every file that was skipped, with the reason.

A score file is read back exactly (`read_score_file`) because no path in it holds a line
break or any other control character and every path is valid UTF-8: images whose names break
that rule are not scored but skipped, with the reason and an escaped name (`printable_path`)
in errors.csv, so the user can rename them.
"""
from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

from grafiqs.io.atomic import atomic_write_text, atomic_write_with
from grafiqs.io.reading import read_text


def atomic_write_npy(path: str | Path, array) -> None:
    """`numpy.save` of `array` to `path`, atomically."""
    import numpy as np

    atomic_write_with(path, lambda file: np.save(file, array))


def safe_file_name(name: str) -> str:
    """`name` with every character outside [A-Za-z0-9._-] replaced by `_`: a set or model name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def replace_prefix(path: str, prefix: str | None, replacement: str | None) -> str:
    """--path-replace/--path-replace-with: swap a leading prefix of the written path.

    As in the official script, nothing is replaced unless both are given. Deliberate difference:
    the official code calls str.replace (every occurrence, anywhere in the path); this replaces
    the prefix only, as both scripts' help text says, so a file name that repeats the folder's
    name is never rewritten.
    """
    if prefix and replacement is not None and path.startswith(prefix):
        return replacement + path[len(prefix):]
    return path


def name_problem(path: str) -> str | None:
    """Why `path` cannot be written to a `<path> <score>` line and read back exactly (None if it can)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    bad = next((c for c in path if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        return f"its name holds the control or line-break character U+{ord(bad):04X}"
    return None


def printable_path(path: str) -> str:
    """`path` with undecodable bytes and control characters escaped (\\xNN, \\n, \\uNNNN), for messages and errors.csv."""
    raw = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in raw)


def quality_from_magnitude(magnitude: float) -> float:
    """Higher is better: -log10 of the raw magnitude (only the order carries meaning)."""
    if math.isnan(magnitude):
        return math.nan
    return -math.log10(magnitude) if magnitude > 0 else math.inf


def write_score_file(path: str | Path, rows: Iterable[tuple[str, float]]) -> None:
    atomic_write_text(path, "".join(f"{name} {float(score)!r}\n" for name, score in rows))


def read_score_file(path: str | Path) -> dict[str, float]:
    """`<path> <score>` lines -> {path: score}; the path may contain spaces (split at the last one).

    Lines end at "\\n" only (a "\\r" before it is dropped), the format's own terminator: str.splitlines
    would also split at characters such as U+2028 or \\x1c. A path given twice keeps its last score.
    """
    return dict(score_lines(path))


def score_lines(path: str | Path) -> list[tuple[str, float]]:
    """The (path, score) entries of a score file in file order, repeats included (see read_score_file)."""
    entries = []
    for number, line in enumerate(read_text(path, "score file").split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            entries.append((name, float(value)))
        except ValueError:
            raise ValueError(f"{path}:{number}: expected '<path> <score>', got {line!r}") from None
    return entries


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
