"""Other FIQA methods' score files (CR-FIQA, MagFace, eDifFIQA, OFIQ, ...) matched to a set's image names."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from grafiqs.errors import InputError, ReadError
from grafiqs.io.score_files import printable_path, score_lines


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
    from grafiqs.evaluation.edc import ORIENTATIONS

    if orientation not in ORIENTATIONS:
        raise InputError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    try:
        entries = score_lines(path)
    except ReadError as error:
        raise InputError(f"cannot read score file {path}: {error.reason}") from None
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
