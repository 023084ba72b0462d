"""Procedurally drawn synthetic faces, degradations of known type and severity, verification sets.

Why: the project trains small BatchNorm iResNets on CPU and then checks that GraFIQs
(BatchNorm-statistics discrepancy) ranks degraded probes below clean ones. Real face
data cannot ship with the repository, so identities are drawn here with cv2 + numpy.
Everything is a pure function of (seed, identity, sample), through numpy Generators seeded
from fixed-length SeedSequence keys, so the same image comes out in any process or
DataLoader worker.

- seeds.py: the tags that start every SeedSequence key (a new random stream gets one here)
- identities.py: identity and per-image nuisance parameters drawn from seeds
- renderer.py: the renderer (`draw_face`, `render`), its texture bank and drawing helpers
- dataset.py: `SyntheticFaces`, the torch Dataset of rendered faces
- degradations.py: `DEGRADATIONS`, `SEVERITY_TABLE`, `degrade` (a new degradation goes here)
- probes.py: verification records of held-out identities, their pairs, the demo folder writer
- drawn_set.py: a drawn verification set on disk (spec, manifest, ledger) and its labels
"""
from grafiqs.synthetic.dataset import SyntheticFaces
from grafiqs.synthetic.degradations import DEGRADATIONS, SEVERITY_TABLE, degrade
from grafiqs.synthetic.identities import (
    neutral_nuisance,
    sample_identity,
    sample_nuisance,
)
from grafiqs.synthetic.probes import (
    make_verification_probes,
    verification_pairs,
    write_demo_folder,
)
from grafiqs.synthetic.renderer import ARCFACE_LANDMARKS, draw_face, render

__all__ = [
    "ARCFACE_LANDMARKS",
    "DEGRADATIONS",
    "SEVERITY_TABLE",
    "SyntheticFaces",
    "degrade",
    "draw_face",
    "make_verification_probes",
    "neutral_nuisance",
    "render",
    "sample_identity",
    "sample_nuisance",
    "verification_pairs",
    "write_demo_folder",
]
