"""The aligned-face check: MTCNN's O-Net on the 112x112 crop flags what is not an aligned face, and only that."""
import cv2
import pytest
import torch

from conftest import GOLDEN
from grafiqs.faces.align import FaceAligner
from grafiqs.data.decode import to_model_tensor
from grafiqs.synthetic import render
from grafiqs.errors import InputError
from grafiqs.faces import check as face_check
from grafiqs.faces.check import NOT_ALIGNED, FaceCheck, is_flagged
from grafiqs.faces.nonfaces import blank, drawn_car, noise, resized_photo


def onet_installed() -> bool:
    try:
        face_check.onet_weights_file()
    except InputError:
        return False
    return True


needs_weights = pytest.mark.skipif(not onet_installed(), reason="facenet-pytorch's O-Net weights are not installed")


@pytest.fixture(scope="module")
def check():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # MTCNN detection below: 5-9x faster on one thread on shared cores (test_align.py)
    yield FaceCheck.pretrained()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos")
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def flags(check, images) -> list[bool]:
    probability, error = check(torch.stack([to_model_tensor(image) for image in images]))
    assert probability.shape == error.shape == (len(images),)
    return [is_flagged(float(p), float(e)) for p, e in zip(probability, error)]


@needs_weights
def test_faces_pass_golden_crops_synthetic_faces_and_align_crops(check, astronaut):
    golden = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted((GOLDEN / "images").glob("*.png"))]
    assert len(golden) == 30  # clean, degraded, gray, RGBA, and large_160 / small_64: aligned crops at other sizes
    synthetic = [render(0, 1_000_000 + i, 0) for i in range(12)]
    matrix = cv2.getRotationMatrix2D((256, 256), 12, 0.9)
    canvas = cv2.warpAffine(astronaut, matrix, (640, 512), borderValue=(128, 128, 128))
    aligned = [FaceAligner()(canvas, "canvas")[0], FaceAligner()(astronaut, "astronaut")[0]]
    assert flags(check, golden + synthetic + aligned) == [False] * 44


@needs_weights
def test_nonfaces_are_flagged_blank_noise_cars_and_resized_full_photos(check, astronaut):
    data = pytest.importorskip("skimage.data")
    photos = [astronaut, cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR)]
    nonfaces = ([blank(i) for i in range(3)] + [noise(i) for i in range(3)] + [drawn_car(i) for i in range(5)]
                + [resized_photo(p) for p in photos])
    assert flags(check, nonfaces) == [True] * len(nonfaces)


@needs_weights
def test_readings_follow_the_colour_order_the_model_is_fed(check):
    crops = torch.stack([to_model_tensor(render(0, 1_000_000 + i, 0)) for i in range(3)])
    rgb = FaceCheck(check.onet, rgb_input=True)
    for got, want in zip(rgb(crops.flip(1)), check(crops)):
        assert torch.equal(got, want)
    assert check(crops[:0])[0].shape == (0,)


def test_a_missing_onet_file_or_the_option_off_skips_the_check_with_a_note(monkeypatch):
    def missing():
        raise InputError("the MTCNN O-Net weights are missing: pip install --no-deps facenet-pytorch==2.6.0")

    monkeypatch.setattr(face_check, "onet_weights_file", missing)
    check, note = face_check.make_face_check(True, False)
    assert check is None and note.startswith("face check skipped: the MTCNN O-Net weights are missing")
    check, note = face_check.make_face_check(False, False)
    assert check is None and "--no-face-check" in note
    assert not is_flagged(float("nan"), float("nan")) and is_flagged(0.49, 1.0) and is_flagged(0.99, 15.5)
    assert NOT_ALIGNED == "not an aligned face?"
