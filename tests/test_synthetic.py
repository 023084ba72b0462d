"""Synthetic faces: determinism, identity structure, degradations of known severity, verification sets."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from grafiqs import synthetic as S  # noqa: E402

CROP = (slice(24, 104), slice(20, 92))  # central face region (eyes to mouth) of a 112x112 crop


def _digest(images) -> str:
    h = hashlib.sha256()
    for image in images:
        h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def _pixel_feature(image: np.ndarray) -> np.ndarray:
    """Raw-pixel identity feature: the face crop in Lab, downsampled and standardised."""
    lab = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2LAB)[CROP].astype(np.float32), (18, 20), interpolation=cv2.INTER_AREA)
    return ((lab - lab.mean()) / (lab.std() + 1e-6)).ravel()


def _laplacian_var(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


# ---------------------------------------------------------------- faces and dataset


def test_shape_dtype_and_labels():
    ds = S.SyntheticFaces(3, 4, seed=0)
    assert len(ds) == 12
    image, label = ds[7]
    assert image.shape == (112, 112, 3) and image.dtype == np.uint8
    assert label == 1 and ds.identity_of(7) == 1
    assert ds[-1][1] == 2
    with pytest.raises(IndexError):
        ds[12]
    assert 20 < image.mean() < 235 and image.std() > 10  # not blank


def test_same_seed_same_pixels_across_instances():
    a, b = S.SyntheticFaces(4, 3, seed=5), S.SyntheticFaces(4, 3, seed=5)
    for i in (0, 4, 11):
        assert np.array_equal(a[i][0], b[i][0])
        assert np.array_equal(a[i][0], S.render(5, i // 3, i % 3))
    assert not np.array_equal(a[0][0], S.SyntheticFaces(4, 3, seed=6)[0][0])
    assert not np.array_equal(a[0][0], a[1][0])  # another sample of the same identity


def test_identity_offset_maps_to_global_identities():
    full = S.SyntheticFaces(10, 2, seed=1)
    held_out = S.SyntheticFaces(3, 2, seed=1, identity_offset=7)
    image, label = held_out[1]
    assert label == 0 and held_out.identity_of(1) == 7
    assert np.array_equal(image, full[15][0])  # identity 7, sample 1


def test_transform_is_applied():
    ds = S.SyntheticFaces(2, 2, transform=lambda im: im[::2, ::2].copy())
    assert ds[0][0].shape == (56, 56, 3)


def test_identical_in_a_fresh_process():
    """Texture bank and random streams depend only on the keys, not on process state."""
    code = (
        "import hashlib; from grafiqs import synthetic as S; h = hashlib.sha256()\n"
        "for i, j in [(0, 0), (3, 2), (1000001, 5)]: h.update(S.render(9, i, j).tobytes())\n"
        "print(h.hexdigest())"
    )
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == _digest(S.render(9, i, j) for i, j in [(0, 0), (3, 2), (1000001, 5)])


def test_dataloader_workers_give_the_same_images():
    import torch

    ds = S.SyntheticFaces(3, 2, seed=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    images = torch.cat([batch[0] for batch in loader]).numpy()
    assert np.array_equal(images, np.stack([ds[i][0] for i in range(len(ds))]))


def test_negative_keys_rejected():
    with pytest.raises(ValueError):
        S.sample_identity(0, -1)
    with pytest.raises(ValueError):
        S.SyntheticFaces(2, 2, identity_offset=-3)


def test_identities_distinct_and_stable_under_expression_and_pose():
    """Under one fixed nuisance, different people differ far more than one person under small pose/expression changes."""
    n = 10
    neutral = S.neutral_nuisance(seed=3)
    faces = [S.draw_face(S.sample_identity(0, i), neutral)[CROP].astype(np.float32) for i in range(n)]
    between = [np.abs(faces[i] - faces[j]).mean() for i in range(n) for j in range(i + 1, n)]
    within = []
    for i in range(n):
        ident = S.sample_identity(0, i)
        for k in range(2):
            nu = S.sample_nuisance(0, i, k)
            varied = dataclasses.replace(
                neutral, mouth_open=nu.mouth_open, smile=nu.smile, eye_open=nu.eye_open, yaw=nu.yaw, pitch=nu.pitch,
                roll=nu.roll / 2, gaze_x=nu.gaze_x, brow_raise=nu.brow_raise,
            )
            within.append(np.abs(S.draw_face(ident, varied)[CROP].astype(np.float32) - faces[i]).mean())
    assert min(between) > 3.0
    assert np.median(between) > 2.5 * np.median(within)


def test_identities_recognisable_by_nearest_centroid():
    """Even raw pixels (Lab, face crop, standardised) recognise people well above chance under full nuisance."""
    n, k, enrol = 10, 5, 3
    x = np.array([[_pixel_feature(S.render(0, i, j)) for j in range(k)] for i in range(n)])
    centroids = x[:, :enrol].mean(1)
    probes = x[:, enrol:].reshape(-1, x.shape[-1])
    labels = np.repeat(np.arange(n), k - enrol)
    predicted = np.argmin(((probes[:, None] - centroids[None]) ** 2).sum(-1), 1)
    assert (predicted == labels).mean() >= 0.35  # chance is 0.1


def test_landmarks_roughly_aligned():
    ip = S.sample_identity(0, 0)
    assert 48 <= ip.eye_y <= 54 and 15 <= ip.eye_dx <= 20
    assert 66 <= ip.nose_y <= 77 and 87 <= ip.mouth_y <= 97
    assert abs(56 - ip.eye_dx - S.ARCFACE_LANDMARKS[0, 0]) < 5


# ---------------------------------------------------------------- degradations


@pytest.fixture(scope="module")
def bases():
    return [S.render(0, i, i) for i in range(3)]


def test_degradation_table_matches_kinds():
    assert set(S.SEVERITY_TABLE) == set(S.DEGRADATIONS)
    assert all(len(v) == 3 for v in S.SEVERITY_TABLE.values())


@pytest.mark.parametrize("kind", S.DEGRADATIONS)
def test_severity_zero_is_identity_and_outputs_deterministic(kind, bases):
    image = bases[0]
    clean = S.degrade(image, kind, 0, seed=1)
    assert np.array_equal(clean, image) and clean is not image
    for severity in (1, 2, 3):
        out = S.degrade(image, kind, severity, seed=4)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, S.degrade(image, kind, severity, seed=4))
        assert not np.array_equal(out, image)


_MEASURES = {
    # kind: (measure of (degraded, clean), +1 if it must increase with severity, -1 if decrease)
    "blur": (lambda d, c: _laplacian_var(d), -1),
    "noise": (lambda d, c: float((d.astype(np.float64) - c).std()), +1),
    "jpeg": (lambda d, c: float(((d.astype(np.float64) - c) ** 2).mean()), +1),
    "downscale": (lambda d, c: _laplacian_var(d), -1),
    "occlusion": (lambda d, c: float((d != c).any(axis=2).mean()), +1),
    "dark": (lambda d, c: float(d.mean()), -1),
    "bright": (lambda d, c: float(d.mean()), +1),
}


@pytest.mark.parametrize("kind", S.DEGRADATIONS)
def test_severity_is_monotonic(kind, bases):
    measure, sign = _MEASURES[kind]
    for k, image in enumerate(bases):
        values = [measure(S.degrade(image, kind, severity, seed=k), image) for severity in range(4)]
        assert all(sign * (b - a) > 0 for a, b in zip(values, values[1:])), (kind, values)


def test_occlusion_covers_the_eyes_and_scales_with_image_size(bases):
    out = S.degrade(bases[0], "occlusion", 2, seed=0)
    assert (out[45:58, 20:92] != bases[0][45:58, 20:92]).any(axis=2).mean() > 0.9  # both eye centres at y~51
    big = cv2.resize(bases[0], (224, 200))
    assert S.degrade(big, "occlusion", 3, seed=0).shape == big.shape


def test_degrade_rejects_bad_arguments(bases):
    with pytest.raises(ValueError):
        S.degrade(bases[0], "fog", 1)
    with pytest.raises(ValueError):
        S.degrade(bases[0], "blur", 4)
    with pytest.raises(ValueError):
        S.degrade(bases[0].astype(np.float32), "blur", 1)


# ---------------------------------------------------------------- verification sets


def test_verification_records_and_pairs():
    n, kinds, enrol, probes = 3, ("blur", "jpeg"), 2, 2
    records = S.make_verification_probes(n, seed=0, identity_offset=500, kinds=kinds, enrol_per_identity=enrol, probes_per_identity=probes)
    per_probe_sample = 1 + len(kinds) * 3  # clean + each kind at severities 1..3
    assert len(records) == n * (enrol + probes * per_probe_sample)
    enrols = [r for r in records if r.role == "enrol"]
    probe_recs = [r for r in records if r.role == "probe"]
    assert len(enrols) == n * enrol and all(r.kind == "none" and r.severity == 0 for r in enrols)
    assert {r.identity for r in records} == {500, 501, 502}
    assert {(r.kind, r.severity) for r in probe_recs} == {("none", 0)} | {(k, s) for k in kinds for s in (1, 2, 3)}
    clean = next(r for r in probe_recs if r.kind == "none")
    assert np.array_equal(clean.image, S.render(0, clean.identity, clean.sample))
    assert clean.sample >= enrol  # probes never reuse an enrolment image
    again = S.make_verification_probes(n, seed=0, identity_offset=500, kinds=kinds, enrol_per_identity=enrol, probes_per_identity=probes)
    assert _digest(r.image for r in records) == _digest(r.image for r in again)

    probe_idx, ref_idx, mated = S.verification_pairs(records)
    assert mated.dtype == bool and len(probe_idx) == len(ref_idx) == len(mated)
    assert mated.sum() == len(probe_recs) * enrol
    assert (~mated).sum() == len(probe_recs) * (n - 1) * enrol
    same = np.array([records[p].identity == records[r].identity for p, r in zip(probe_idx, ref_idx)])
    assert np.array_equal(same, mated)
    assert all(records[p].role == "probe" and records[r].role == "enrol" for p, r in zip(probe_idx, ref_idx))

    p2, r2, m2 = S.verification_pairs(records, nonmated_per_probe=1, seed=3)
    assert m2.sum() == len(probe_recs) * enrol and (~m2).sum() == len(probe_recs)
    p3, r3, m3 = S.verification_pairs(records, nonmated_per_probe=1, seed=3)
    assert np.array_equal(r2, r3) and np.array_equal(p2, p3) and np.array_equal(m2, m3)


def test_verification_rejects_unknown_kind():
    with pytest.raises(ValueError):
        S.make_verification_probes(1, kinds=("fog",))


def test_write_demo_folder(tmp_path):
    manifest = S.write_demo_folder(tmp_path / "demo", num_identities=2, kinds=("noise", "dark"), severities=(0, 2), probes_per_identity=1)
    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "identity", "role", "degradation", "severity"]
    assert len(rows) == 2 * (1 + 1 + 2)  # enrol + clean probe + two degraded probes, per identity
    pngs = sorted(p.name for p in (tmp_path / "demo").glob("*.png"))
    assert pngs == sorted(r["file"] for r in rows)
    records = S.make_verification_probes(2, kinds=("noise", "dark"), severities=(0, 2), probes_per_identity=1)
    for row, record in zip(rows, records):
        assert row["file"].startswith(f"id{record.identity}_{record.role}_")
        assert (row["role"], row["degradation"], int(row["severity"]), int(row["identity"])) == (
            record.role, record.kind, record.severity, record.identity)
        assert np.array_equal(cv2.imread(str(tmp_path / "demo" / row["file"])), record.image)  # PNG is lossless


# ---------------------------------------------------------------- the wide world


def test_wide_world_leaves_the_standard_world_alone_and_draws_its_own():
    for identity, sample in [(0, 0), (5, 3), (1000001, 7)]:
        standard = S.sample_nuisance(0, identity, sample)
        assert S.sample_nuisance(0, identity, sample, "standard") == standard
        assert (standard.age, standard.sunglasses, standard.cap) == (0.0, False, None)
        wide = S.sample_nuisance(0, identity, sample, "wide")
        assert wide == S.sample_nuisance(0, identity, sample, "wide")
        assert wide.seed == standard.seed and wide.yaw != standard.yaw  # same background and sensor, other pose
    a = S.SyntheticFaces(2, 3, world="wide")
    assert _digest(a[i][0] for i in range(6)) == _digest(S.SyntheticFaces(2, 3, world="wide")[i][0] for i in range(6))
    assert _digest(a[i][0] for i in range(6)) != _digest(S.SyntheticFaces(2, 3)[i][0] for i in range(6))
    with pytest.raises(ValueError, match="unknown world"):
        S.sample_nuisance(0, 0, 0, "hard")
    with pytest.raises(ValueError, match="unknown world"):
        S.SyntheticFaces(2, 2, world="hard")


def test_a_drawn_set_is_drawn_in_its_world(tmp_path):
    from grafiqs.synthetic.drawn_set import SyntheticSetSpec, prepare_synthetic_set, synthetic_set_ready

    spec = SyntheticSetSpec(num_identities=2, kinds=("blur",), severities=(0, 1), world="wide")
    folder = prepare_synthetic_set(tmp_path / "wide", spec, progress=False)
    records = S.make_verification_probes(2, kinds=("blur",), severities=(0, 1), probes_per_identity=1, world="wide")
    with (folder / "manifest.csv").open() as handle:
        files = [row["file"] for row in csv.DictReader(handle)]
    assert all(np.array_equal(cv2.imread(str(folder / name)), record.image) for name, record in zip(files, records))
    assert synthetic_set_ready(folder, spec)
    assert not synthetic_set_ready(folder, dataclasses.replace(spec, world="standard"))  # a set of one world only


def test_wide_world_ages_people_and_puts_on_accessories():
    draws = [S.sample_nuisance(0, i, s, "wide") for i in range(40) for s in range(16)]
    ages = np.array([d.age for d in draws])
    assert ages.min() < -0.9 and ages.max() > 0.9
    assert 0.04 < np.mean([d.sunglasses for d in draws]) < 0.12
    assert 0.06 < np.mean([d.cap is not None for d in draws]) < 0.14
    person = S.sample_identity(0, 4)
    young = S.draw_face(person, dataclasses.replace(S.neutral_nuisance(1), age=-1.0))
    old = S.draw_face(person, dataclasses.replace(S.neutral_nuisance(1), age=1.0))
    shades = S.draw_face(person, dataclasses.replace(S.neutral_nuisance(1), sunglasses=True))
    eyes = (slice(44, 58), slice(28, 84))
    assert np.abs(young.astype(int) - old.astype(int))[CROP].mean() > 2.0
    assert shades[eyes].mean() < 0.7 * S.draw_face(person, S.neutral_nuisance(1))[eyes].mean()


def test_wide_world_is_harder_to_recognise_from_raw_pixels():
    """The same people under the wide world's nuisance are harder for a raw-pixel nearest centroid."""
    n, k, enrol = 20, 6, 3

    def accuracy(world: str) -> float:
        x = np.array([[_pixel_feature(S.draw_face(S.sample_identity(0, i), S.sample_nuisance(0, i, j, world))) for j in range(k)]
                      for i in range(n)])
        centroids = x[:, :enrol].mean(1)
        probes = x[:, enrol:].reshape(-1, x.shape[-1])
        predicted = np.argmin(((probes[:, None] - centroids[None]) ** 2).sum(-1), 1)
        return float((predicted == np.repeat(np.arange(n), k - enrol)).mean())

    standard, wide = accuracy("standard"), accuracy("wide")
    print(f"raw-pixel nearest-centroid accuracy: standard {standard:.2f}, wide {wide:.2f}")
    assert wide < standard - 0.1
