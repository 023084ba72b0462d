"""The curation experiment's data: a synthetic RecordIO training set with a share of hard-degraded images.

    python -m grafiqs.experiments.curation_experiment --config configs/curation/data.yaml
    python -m grafiqs.experiments.curation_experiment --config configs/curation/data.yaml --check outputs/curation/filtered

Writes into `output_dir`: `train/` (train.rec, train.idx, property: `num_identities` x `images_per_identity`
procedural faces of identities the bundled models never saw, `degraded_fraction` of them, drawn at random,
degraded at `severity` by one of `kinds`), `degraded.csv` (key, label, kind of every degraded image) and `val.bin`
(insightface .bin: per held-out identity one clean enrolment against a clean probe, and against the next
identity's probe as impostor), every file through the folder's ledger. `--check CURATED` reads a curated set's
`images.csv` (curate.py) and prints how many of the degraded images the filter removed and how many of the
removed images were degraded, per kind.
"""
from __future__ import annotations

import csv
import io
import pickle
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np

from grafiqs.errors import InputError

HARD_KINDS = ["blur", "downscale", "occlusion", "dark", "bright", "noise"]


@dataclass
class DegradedSetConfig:
    """A synthetic training set with `degraded_fraction` of its images degraded at `severity` (1-3) by one of
    `kinds`; `val_identities` held-out people for val.bin. Identities from `identity_offset` on."""

    output_dir: str = "outputs/curation/data"
    num_identities: int = 300
    images_per_identity: int = 12
    seed: int = 0
    identity_offset: int = 3_000_000
    degraded_fraction: float = 0.2
    kinds: list[str] = field(default_factory=lambda: list(HARD_KINDS))
    severity: int = 3
    val_identities: int = 200
    val_identity_offset: int = 3_100_000
    check: Optional[str] = None  # a curated folder (curate.py's output_dir): report what its filter removed

    def __post_init__(self) -> None:
        from grafiqs.synthetic import DEGRADATIONS

        for key, least in (("num_identities", 1), ("images_per_identity", 1), ("val_identities", 2), ("seed", 0),
                           ("identity_offset", 0), ("val_identity_offset", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"{key} must be a whole number >= {least}, got {value!r}")
        if not 0 <= self.degraded_fraction <= 1:
            raise InputError(f"degraded_fraction must lie in [0, 1], got {self.degraded_fraction!r}")
        if self.severity not in (1, 2, 3):
            raise InputError(f"severity must be 1, 2 or 3, got {self.severity!r}")
        if not self.kinds or not set(self.kinds) <= set(DEGRADATIONS):
            raise InputError(f"kinds must name one or more of {', '.join(DEGRADATIONS)}, got {self.kinds}")
        train = range(self.identity_offset, self.identity_offset + self.num_identities)
        held_out = range(self.val_identity_offset, self.val_identity_offset + self.val_identities)
        if set(train) & set(held_out):
            raise InputError("the training and the val.bin identities overlap; move val_identity_offset")


def degraded_plan(config: DegradedSetConfig) -> dict[int, str]:
    """Image index (0-based, in label order) -> the degradation kind, for the drawn share of the images."""
    rng = np.random.default_rng([config.seed, 23])
    total = config.num_identities * config.images_per_identity
    chosen = np.sort(rng.choice(total, size=round(config.degraded_fraction * total), replace=False))
    kinds = rng.choice(len(config.kinds), size=len(chosen))
    return {int(i): config.kinds[int(k)] for i, k in zip(chosen, kinds)}


def write_degraded_set(config: DegradedSetConfig, say=print) -> Path:
    import cv2

    from grafiqs.data.recordio import IDX_NAME, JPEG_QUALITY, PROPERTY_NAME, REC_NAME
    from grafiqs.experiments.curation import write_training_set
    from grafiqs.io.atomic import atomic_write_with
    from grafiqs.io.ledger import OutputFolder
    from grafiqs.io.score_files import write_csv
    from grafiqs.synthetic import degrade, render

    folder = OutputFolder(config.output_dir, "output_dir")
    names = {f"train/{n}" for n in (REC_NAME, IDX_NAME, PROPERTY_NAME)} | {"degraded.csv", "val.bin"}
    folder.claim(names)
    (folder.path / "train").mkdir(exist_ok=True)
    plan = degraded_plan(config)
    per = config.images_per_identity

    def jpeg(image) -> bytes:
        return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()

    def images():
        for index in range(config.num_identities * per):
            label, sample = divmod(index, per)
            image = render(config.seed, config.identity_offset + label, sample)
            if index in plan:
                image = degrade(image, plan[index], config.severity, seed=config.seed * 1_000_003 + index)
            yield jpeg(image), float(label)

    write_training_set(folder.path / "train", images(), np.full(config.num_identities, per), True, (112, 112))
    write_csv(folder.path / "degraded.csv", ["key", "label", "kind", "severity"],
              [[index + 1, index // per, kind, config.severity] for index, kind in sorted(plan.items())])
    probes, flags = [], []
    for i in range(config.val_identities):
        person = config.val_identity_offset + i
        other = config.val_identity_offset + (i + 1) % config.val_identities
        enrol = jpeg(render(config.seed, person, 0))
        probes += [enrol, jpeg(render(config.seed, person, 1)), enrol, jpeg(render(config.seed, other, 1))]
        flags += [True, False]
    atomic_write_with(folder.path / "val.bin", lambda file: pickle.dump((probes, flags), file, protocol=4))
    say(f"wrote {config.num_identities * per} training images ({len(plan)} degraded at severity {config.severity}: "
        f"{', '.join(config.kinds)}) to {folder.path / 'train'}, {len(flags)} pairs to {folder.path / 'val.bin'}")
    return folder.path


def check_filter(config: DegradedSetConfig, curated: str | Path) -> dict:
    """How the curated set's filter met the degraded images: removed share per kind, precision of the removals."""
    from grafiqs.data.containers import parse_name
    from grafiqs.io.reading import read_text

    degraded = {int(r["key"]): r["kind"] for r in csv.DictReader(io.StringIO(read_text(
        Path(config.output_dir) / "degraded.csv", "degraded.csv")))}
    decisions = {parse_name(r["path"])[1]: r["decision"] for r in csv.DictReader(io.StringIO(read_text(
        Path(curated) / "images.csv", "images.csv of a curated set")))}
    removed = {key for key, decision in decisions.items() if decision != "kept"}
    kinds = sorted(set(degraded.values()))
    result = {"images": len(decisions), "degraded": len(degraded), "removed": len(removed),
              "degraded_removed": len(removed & set(degraded)),
              "per_kind": {k: [sum(1 for key, kind in degraded.items() if kind == k and key in removed),
                               sum(1 for kind in degraded.values() if kind == k)] for k in kinds}}
    recall = result["degraded_removed"] / max(len(degraded), 1)
    precision = result["degraded_removed"] / max(len(removed), 1)
    print(f"removed {len(removed)} of {len(decisions)} images; {result['degraded_removed']} of the {len(degraded)} "
          f"degraded ones ({recall:.1%}); {precision:.1%} of the removed were degraded (chance: "
          f"{len(degraded) / max(len(decisions), 1):.1%})")
    for kind, (gone, count) in result["per_kind"].items():
        print(f"  {kind}: {gone} of {count} removed ({gone / max(count, 1):.0%})")
    return result


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import ArgumentError, ArgumentParser

    from grafiqs.errors import GrafiqsError
    from grafiqs.experiments.curation import checked_config_file

    parser = ArgumentParser(prog="python -m grafiqs.experiments.curation_experiment", exit_on_error=False,
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action=checked_config_file("curation experiment config"))
    parser.add_class_arguments(DegradedSetConfig)
    try:
        try:
            namespace = parser.parse_args(sys.argv[1:] if argv is None else argv)
            values = parser.instantiate(namespace)
        except (ArgumentError, TypeError, ValueError) as error:
            cause = error
            while cause is not None and not isinstance(cause, InputError):
                cause = cause.__cause__ or cause.__context__
            raise cause or InputError(" ".join(str(error).split())) from None
        config = DegradedSetConfig(**{f.name: values[f.name] for f in fields(DegradedSetConfig)})
        if config.check:
            check_filter(config, config.check)
        else:
            write_degraded_set(config)
    except GrafiqsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
