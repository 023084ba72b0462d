"""Verification sets of held-out identities: clean enrolments and degraded probes, their pairs, the demo folder.

`make_verification_probes` draws the records, `verification_pairs` the mated and non-mated
comparisons between them, and `write_demo_folder` writes records as PNGs plus manifest.csv.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from grafiqs.synthetic.degradations import DEGRADATIONS, SEVERITY_TABLE, degrade
from grafiqs.synthetic.identities import sample_identity, sample_nuisance
from grafiqs.synthetic.renderer import draw_face
from grafiqs.synthetic.seeds import _TAG_DEGRADE, _TAG_PAIRS


@dataclass(frozen=True)
class VerificationRecord:
    """One image of a verification set: a clean enrolment or a (possibly degraded) probe."""

    image: np.ndarray
    identity: int
    role: str  # "enrol" or "probe"
    kind: str  # degradation kind, "none" when clean
    severity: int
    sample: int


def _derived_seed(*key: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0] >> 1)


def make_verification_probes(
    num_identities: int,
    seed: int = 0,
    identity_offset: int = 1_000_000,
    kinds: Sequence[str] = DEGRADATIONS,
    severities: Sequence[int] = (0, 1, 2, 3),
    enrol_per_identity: int = 1,
    probes_per_identity: int = 2,
    one_per_probe: bool = False,
    severity_weights: Sequence[float] | None = None,
    world: str = "standard",
) -> list[VerificationRecord]:
    """Clean enrolments and degraded probes of held-out identities `identity_offset ..`.

    Per identity: samples 0..enrol_per_identity-1 are clean enrolments; each following probe
    sample appears once clean (kind "none", if 0 is in `severities`) and once per kind and
    non-zero severity, all degrading the same base image, so effects are directly comparable.
    With `one_per_probe`, each probe sample appears once instead, at one severity drawn from
    `severities` (0 = clean; with probabilities `severity_weights`, default uniform) and one kind
    drawn from `kinds`: a test set of mixed quality, where most probes are not degraded at every
    level at once, as in real evaluation sets.
    """
    if severity_weights is not None and (len(severity_weights) != len(severities) or min(severity_weights) < 0
                                         or sum(severity_weights) <= 0):
        raise ValueError(f"severity_weights must give one non-negative weight per severity {tuple(severities)}, "
                         f"got {tuple(severity_weights)}")
    chances = None if severity_weights is None else np.asarray(severity_weights, float) / sum(severity_weights)
    for kind in kinds:
        if kind not in SEVERITY_TABLE:
            raise ValueError(f"unknown degradation {kind!r}; choose from {', '.join(DEGRADATIONS)}")
    records: list[VerificationRecord] = []
    for local in range(num_identities):
        identity = identity_offset + local
        params = sample_identity(seed, identity)
        for sample in range(enrol_per_identity):
            records.append(VerificationRecord(draw_face(params, sample_nuisance(seed, identity, sample, world)), identity, "enrol", "none", 0, sample))
        for sample in range(enrol_per_identity, enrol_per_identity + probes_per_identity):
            base = draw_face(params, sample_nuisance(seed, identity, sample, world))
            if one_per_probe:
                r = np.random.default_rng(np.random.SeedSequence([_TAG_DEGRADE, seed, identity, sample, 0xA5]))
                severity, kind = int(r.choice(severities, p=chances)), str(r.choice(list(kinds)))
                k = DEGRADATIONS.index(kind)
                image = degrade(base, kind, severity, _derived_seed(_TAG_DEGRADE, seed, identity, sample, k, severity))
                records.append(VerificationRecord(image, identity, "probe", kind if severity else "none", severity, sample))
                continue
            if 0 in severities:
                records.append(VerificationRecord(base, identity, "probe", "none", 0, sample))
            for k, kind in enumerate(DEGRADATIONS):
                if kind not in kinds:
                    continue
                for severity in severities:
                    if severity == 0:
                        continue
                    image = degrade(base, kind, severity, _derived_seed(_TAG_DEGRADE, seed, identity, sample, k, severity))
                    records.append(VerificationRecord(image, identity, "probe", kind, int(severity), sample))
    return records


def verification_pairs(
    records: Sequence[VerificationRecord], nonmated_per_probe: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probe_index, enrol_index, mated) arrays into `records`.

    Mated: every probe against every enrolment of its identity. Non-mated: every probe against
    all enrolments of other identities, or a deterministic sample of `nonmated_per_probe` of them.
    """
    enrol = np.array([i for i, rec in enumerate(records) if rec.role == "enrol"], dtype=np.int64)
    enrol_ids = np.array([records[i].identity for i in enrol], dtype=np.int64)
    r = np.random.default_rng(np.random.SeedSequence([_TAG_PAIRS, int(seed)]))
    probes, refs, mated = [], [], []
    for i, rec in enumerate(records):
        if rec.role != "probe":
            continue
        same = enrol[enrol_ids == rec.identity]
        other = enrol[enrol_ids != rec.identity]
        if nonmated_per_probe is not None and len(other) > nonmated_per_probe:
            other = np.sort(r.choice(other, size=nonmated_per_probe, replace=False))
        probes += [i] * (len(same) + len(other))
        refs += list(same) + list(other)
        mated += [True] * len(same) + [False] * len(other)
    return np.array(probes, np.int64), np.array(refs, np.int64), np.array(mated, bool)


def write_demo_folder(
    out_dir: str | Path,
    num_identities: int = 4,
    seed: int = 0,
    identity_offset: int = 1_000_000,
    kinds: Sequence[str] = DEGRADATIONS,
    severities: Sequence[int] = (0, 1, 2, 3),
    enrol_per_identity: int = 1,
    probes_per_identity: int = 1,
    records: Sequence[VerificationRecord] | None = None,
    one_per_probe: bool = False,
    severity_weights: Sequence[float] | None = None,
    world: str = "standard",
) -> Path:
    """Write verification records as PNGs plus manifest.csv (file, identity, role, degradation, severity).

    File names encode the same fields, e.g. `id1000000_probe_s01_blur_2.png`. Returns the manifest path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if records is None:
        records = make_verification_probes(num_identities, seed, identity_offset, kinds, severities, enrol_per_identity,
                                           probes_per_identity, one_per_probe, severity_weights, world)
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "identity", "role", "degradation", "severity"])
        for rec in records:
            name = f"id{rec.identity}_{rec.role}_s{rec.sample:02d}_{rec.kind}_{rec.severity}.png"
            if not cv2.imwrite(str(out / name), rec.image):
                raise OSError(f"could not write {out / name}")
            writer.writerow([name, rec.identity, rec.role, rec.kind, rec.severity])
    return manifest
