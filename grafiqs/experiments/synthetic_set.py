"""A synthetic verification set on disk: clean enrolments and degraded probes of held-out identities.

The demo and the synthetic ablation score a folder of PNGs like any user folder, then
evaluate with the labels of its `manifest.csv` (identity, role, degradation, severity).
The folder is written once per specification (`spec.json`) and reused afterwards.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from grafiqs.data.synthetic import DEGRADATIONS, write_demo_folder
from grafiqs.errors import InputError
from grafiqs.evaluation.report import PairSet

MANIFEST = "manifest.csv"
SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class SyntheticSetSpec:
    """Which held-out identities, probes and degradations a synthetic verification set holds."""

    num_identities: int = 100
    probes_per_identity: int = 1  # probe samples; each appears clean and at every kind x severity
    kinds: tuple[str, ...] = DEGRADATIONS
    severities: tuple[int, ...] = (0, 1, 2, 3)
    seed: int = 0
    identity_offset: int = 1_000_000  # disjoint from the training identities (0 .. N-1)

    @classmethod
    def from_dict(cls, values: dict) -> "SyntheticSetSpec":
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown synthetic set options {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        values = dict(values)
        for key in ("kinds", "severities"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @property
    def size(self) -> int:
        per_probe = (0 in self.severities) + len(self.kinds) * sum(s != 0 for s in self.severities)
        return self.num_identities * (1 + self.probes_per_identity * per_probe)


def prepare_synthetic_set(folder: str | Path, spec: SyntheticSetSpec, progress: bool = True) -> Path:
    """Write the set's PNGs and manifest into `folder` unless a set of the same spec is there; returns the folder."""
    folder = Path(folder)
    spec_path = folder / SPEC_FILE
    wanted = asdict(spec) | {"kinds": list(spec.kinds), "severities": list(spec.severities)}
    if spec_path.exists() and (folder / MANIFEST).exists():
        if json.loads(spec_path.read_text()) == wanted:
            return folder
    if progress:
        print(f"drawing {spec.size} synthetic faces ({spec.num_identities} held-out identities) into {folder} ...", flush=True)
    for old in folder.glob("*.png"):
        old.unlink()
    write_demo_folder(folder, spec.num_identities, spec.seed, spec.identity_offset, spec.kinds, spec.severities,
                      enrol_per_identity=1, probes_per_identity=spec.probes_per_identity)
    spec_path.write_text(json.dumps(wanted, indent=1))
    return folder


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
