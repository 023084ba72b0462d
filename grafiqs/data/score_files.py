"""Score files in the formats the field uses, written atomically.

- `GraFIQs_<group>.txt`: one `<path> <score>` line per image, the official GraFIQs and
  CR-FIQA layout, with the raw gradient magnitude (larger = lower quality).
- `scores.csv`: every group's raw magnitude, the BNS loss and `quality` (higher = better).
- `errors.csv`: every file that was skipped, with the reason.
- other FIQA methods' `<path> <score>` files, matched to image names by `read_external_scores`.

A score file is read back exactly (`read_score_file`) because no path in it holds a line
break or any other control character and every path is valid UTF-8: images whose names break
that rule are not scored but skipped, with the reason and an escaped name (`printable_path`)
in errors.csv, so the user can rename them.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from grafiqs.errors import InputError

if TYPE_CHECKING:
    import numpy as np


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npy(path: str | Path, array) -> None:
    """`numpy.save` of `array` to `path`, atomically."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's private 0600 is not what users expect


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_with(path, lambda file: file.write(data))


def atomic_write_with(path: str | Path, write) -> None:
    """`write(binary file)` into a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), start=1):
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


@dataclass(frozen=True)
class ExternalScores:
    names: list[str]  # the image names the scores belong to (the caller's, or the file's in file order)
    scores: np.ndarray  # float64, one per name
    orientation: str  # "higher_is_better" | "lower_is_better", as grafiqs.evaluation.edc takes it


def read_external_scores(path: str | Path, orientation: str, names: Sequence[str] | None = None) -> ExternalScores:
    """Another FIQA method's `<path> <score>` file (CR-FIQA, MagFace, eDifFIQA, OFIQ, ...), in `names` order.

    Each name takes the entry with the same path; failing that, the entry whose path ends with the
    name's, else the longest entry that the name's path ends with: the shorter path must be a
    trailing run of the longer one's parts (`/data/lfw/images/a/a_0001.jpg` matches `a/a_0001.jpg`
    either way round, `b/1.jpg` never matches `a/1.jpg`; `/` and `\\` both separate parts; the
    longest common trailing part decides). The file's orientation is not in the file,
    so the caller states it. Raises InputError for a path given twice in the file, for names that
    match no entry or several equally well, and for two names that match the same entry.
    Without `names`, every entry is returned in file order.
    """
    import numpy as np

    from grafiqs.evaluation.edc import ORIENTATIONS

    if orientation not in ORIENTATIONS:
        raise InputError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    try:
        entries = score_lines(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"cannot read score file {path}: {error}") from None
    scores = dict(entries)
    repeated = [name for name, count in Counter(name for name, _ in entries).items() if count > 1]
    if repeated:
        raise InputError(f"{path}: {len(repeated)} paths appear more than once, e.g. "
                         f"{', '.join(printable_path(n) for n in repeated[:5])}; which score is meant is unclear")
    if names is None:
        return ExternalScores(list(scores), np.fromiter(scores.values(), np.float64, len(scores)), orientation)

    by_suffix: dict[tuple[str, ...], list[str]] = {}  # every trailing run of parts -> the entries ending so
    whole: dict[tuple[str, ...], list[str]] = {}  # all of an entry's parts -> the entry (several if spelt apart)
    for key in scores:
        parts = _path_parts(key)
        whole.setdefault(parts, []).append(key)
        for start in range(len(parts)):
            by_suffix.setdefault(parts[start:], []).append(key)
    matched, missing, ambiguous = [], [], []
    for name in names:
        key = name if name in scores else _trailing_match(_path_parts(name), by_suffix, whole)
        if key is None:
            missing.append(name)
        elif isinstance(key, list):
            ambiguous.append(f"{printable_path(name)} (~ {', '.join(printable_path(k) for k in key[:3])})")
        matched.append(key)
    if missing:
        raise InputError(f"{path}: {len(missing)} of {len(names)} images have no score, e.g. "
                         f"{', '.join(printable_path(n) for n in missing[:5])}")
    if ambiguous:
        raise InputError(f"{path}: {len(ambiguous)} images match several entries equally well, e.g. "
                         f"{'; '.join(ambiguous[:5])}; give names with more of their folders")
    exact = set(names)
    by_trailing_parts = Counter(key for key, name in zip(matched, names) if key != name)
    shared = [key for key, count in by_trailing_parts.items() if count > 1 or key in exact]
    if shared:
        raise InputError(f"{path}: {len(shared)} entries match more than one image, e.g. "
                         f"{', '.join(printable_path(k) for k in shared[:5])}; give names with more of their folders")
    return ExternalScores(list(names), np.array([scores[key] for key in matched], dtype=np.float64), orientation)


def _path_parts(path: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[\\/]+", path) if part not in ("", "."))


def _trailing_match(parts: tuple[str, ...], by_suffix: dict, whole: dict) -> str | list[str] | None:
    """The entry that ends with all of `parts`, else the longest entry that `parts` end with; a list if tied."""
    keys = by_suffix.get(parts) or next((whole[parts[s:]] for s in range(1, len(parts)) if parts[s:] in whole), None)
    if not keys:
        return None
    return keys[0] if len(keys) == 1 else keys
