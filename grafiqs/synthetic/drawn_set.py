"""A synthetic verification set on disk: clean enrolments and degraded probes of held-out identities.

The demo and the synthetic ablation score a folder of PNGs like any user folder, then
evaluate with the labels of its `manifest.csv` (identity, role, degradation, severity).
The folder is written once per specification (`spec.json`) and reused afterwards; its ledger
(`.grafiqs/written.jsonl`, the SHA-256 of every file drawn) is what marks it as drawn by this program.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from grafiqs.errors import InputError, stop_on_signals
from grafiqs.evaluation.report import PairSet
from grafiqs.io.ledger import LEDGER, LOG_FOLDER, OutputFolder
from grafiqs.synthetic.degradations import DEGRADATIONS
from grafiqs.synthetic.probes import write_demo_folder

MANIFEST = "manifest.csv"
SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class SyntheticSetSpec:
    """Which held-out identities, probes and degradations a synthetic verification set holds."""

    num_identities: int = 100
    probes_per_identity: int = 1  # probe samples; each appears clean and at every kind x severity ...
    one_per_probe: bool = False  # ... or once, at one drawn kind and severity (a set of mixed quality)
    severity_weights: Optional[tuple[float, ...]] = None  # one_per_probe: chance of each severity (default uniform)
    kinds: tuple[str, ...] = DEGRADATIONS
    severities: tuple[int, ...] = (0, 1, 2, 3)
    seed: int = 0
    identity_offset: int = 1_000_000  # disjoint from the training identities (0 .. N-1)
    world: str = "standard"  # the nuisance the faces are drawn under (identities.WORLDS)

    @property
    def size(self) -> int:
        if self.one_per_probe:
            return self.num_identities * (1 + self.probes_per_identity)
        per_probe = (0 in self.severities) + len(self.kinds) * sum(s != 0 for s in self.severities)
        return self.num_identities * (1 + self.probes_per_identity * per_probe)


STATE_FILES = (LEDGER, "lock")  # what the state folder of a drawn set holds; anything else there is someone's


def prepare_synthetic_set(folder: str | Path, spec: SyntheticSetSpec, progress: bool = True,
                          advice: str = "choose an empty or new folder") -> Path:
    """Write the set's PNGs and manifest into `folder` unless a set of the same spec is there; returns the folder.

    A drawn set carries a marker only this program writes: the ledger of its folder
    (`.grafiqs/written.jsonl`, `grafiqs.io.ledger`) with the SHA-256 of every file drawn. The set is
    drawn into a new hidden folder beside `folder`, recorded there, and moved into place when
    complete, so an interrupted draw (Ctrl-C, SIGTERM) leaves nothing behind. An existing `folder` is
    replaced only if it is empty or every file in it is still exactly a file of a drawn set; any other
    file (a user's photos, their own manifest.csv and spec.json included, or a file in its .grafiqs/) makes it
    refuse, before anything is drawn or deleted; `advice` says what to do then.
    """
    folder = Path(folder)
    if synthetic_set_ready(folder, spec):
        return folder
    if os.path.lexists(folder) and not folder.is_dir():
        raise InputError(f"{folder} is a file; the synthetic set needs a folder (created if missing)")
    drawn = OutputFolder(folder, "synthetic set folder")
    if folder.is_dir():
        present = set(os.listdir(folder)) - {LOG_FOLDER}
        try:
            foreign = sorted(present - drawn.written())
            if os.path.isdir(folder / LOG_FOLDER):  # not a link: written() refuses one
                state = set(os.listdir(folder / LOG_FOLDER)) - set(STATE_FILES)
                foreign += sorted(f"{LOG_FOLDER}/{name}" for name in state)
        except InputError:  # a damaged or foreign ledger proves nothing
            foreign = sorted(present) or [LOG_FOLDER]
        if foreign:
            raise InputError(f"{folder} holds files that are not a synthetic set drawn by this program ({', '.join(foreign[:3])}"
                             f"{' ...' if len(foreign) > 3 else ''}); it never deletes them: {advice}")
    if progress:
        print(f"drawing {spec.size} synthetic faces ({spec.num_identities} held-out identities) into {folder} ...", flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    drawing = Path(tempfile.mkdtemp(prefix=f".{folder.name}.drawing-", dir=folder.parent))
    try:
        with stop_on_signals():
            write_demo_folder(drawing, spec.num_identities, spec.seed, spec.identity_offset, spec.kinds, spec.severities,
                              enrol_per_identity=1, probes_per_identity=spec.probes_per_identity,
                              one_per_probe=spec.one_per_probe, severity_weights=spec.severity_weights,
                              world=spec.world)
            (drawing / SPEC_FILE).write_text(json.dumps(_spec_json(spec), indent=1))
            OutputFolder(drawing).adopt(os.listdir(drawing))
            if folder.is_dir():
                drawn.remove(drawn.written())  # the previous set, each file checked against its recorded digest
                for state in STATE_FILES:  # the program's own state; anything else there makes rmdir fail
                    (folder / LOG_FOLDER / state).unlink(missing_ok=True)
                (folder / LOG_FOLDER).rmdir()
                folder.rmdir()  # empty now; a file that appeared meanwhile makes this fail instead of being lost
            drawing.rename(folder)
    except BaseException:
        shutil.rmtree(drawing, ignore_errors=True)
        raise
    return folder


def synthetic_set_ready(folder: str | Path, spec: SyntheticSetSpec) -> bool:
    """Whether `folder` holds a complete set drawn for `spec`, every file as drawn (a DDP worker waits for rank 0)."""
    folder = Path(folder)
    try:
        ours = OutputFolder(folder).written() if folder.is_dir() else set()
    except InputError:
        return False
    if not {MANIFEST, SPEC_FILE} <= ours or _read_json(folder / SPEC_FILE) != _spec_json(spec):
        return False
    with (folder / MANIFEST).open(newline="", encoding="utf-8") as handle:
        return {row["file"] for row in csv.DictReader(handle)} <= ours


def _spec_json(spec: SyntheticSetSpec) -> dict:
    return asdict(spec) | {"kinds": list(spec.kinds), "severities": list(spec.severities),
                           "severity_weights": spec.severity_weights and list(spec.severity_weights)}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class LabelledImages:
    """Manifest labels aligned with a list of scored image names."""

    identity: np.ndarray
    enrol: np.ndarray  # bool: clean enrolment image
    degradation: list[str]
    severity: np.ndarray
    rows: dict[str, dict] = field(default_factory=dict)  # file name -> manifest row

    def pairs(self) -> PairSet:
        """Every probe against every enrolment: mated with its own identity, non-mated with all others."""
        probes, enrolments = np.flatnonzero(~self.enrol), np.flatnonzero(self.enrol)
        first = np.repeat(probes, enrolments.size)
        second = np.tile(enrolments, probes.size)
        return PairSet(first, second, self.identity[first] == self.identity[second])


def read_labels(folder: str | Path, names: list[str] | None = None) -> LabelledImages:
    """Labels of `names` (file names inside `folder`; default: every image, in manifest order) from its manifest.csv."""
    manifest = Path(folder) / MANIFEST
    if not manifest.exists():
        raise InputError(f"{manifest} is missing: the folder is not a synthetic verification set")
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle)}
    names = list(rows) if names is None else names
    missing = [n for n in names if n not in rows]
    if missing:
        raise InputError(f"{manifest} has no labels for {len(missing)} scored images, e.g. {missing[0]}")
    chosen = [rows[n] for n in names]
    return LabelledImages(
        identity=np.array([int(r["identity"]) for r in chosen], dtype=np.int64),
        enrol=np.array([r["role"] == "enrol" for r in chosen], dtype=bool),
        degradation=[r["degradation"] for r in chosen],
        severity=np.array([int(r["severity"]) for r in chosen], dtype=np.int64),
        rows={n: rows[n] for n in names},
    )
