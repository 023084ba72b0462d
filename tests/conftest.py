import atexit
import contextlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# score.py records measured speeds (and inductor its kernels) in a cache folder: never the user's one in tests
os.environ["GRAFIQS_CACHE_DIR"] = tempfile.mkdtemp(prefix="grafiqs-test-cache-")
atexit.register(shutil.rmtree, os.environ["GRAFIQS_CACHE_DIR"], ignore_errors=True)

from grafiqs.allocator import retain_freed_memory  # noqa: E402
from grafiqs.models.iresnet import IResNet  # noqa: E402

# The allocator setting score.py, ablate.py and train_fr.py make first thing, made here for every test: otherwise
# library-API tests ran 2-6x slower (iresnet50 at batch 1: page faults of fresh mappings) or not, depending on
# whether an earlier test had run one of those programs in this process.
retain_freed_memory()

GOLDEN = Path(__file__).parent / "data" / "golden"
GOLDEN_GROUPS = ("image", "block1", "block2", "block3", "block4")
FACES = ["clean.png", "blur_3.png", "dark.png", "noise_40.png", "occluded_eyes.png", "flip.png"]


@pytest.fixture
def faces(tmp_path) -> Path:
    """A folder with six golden crops, as a user's folder of aligned faces."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in FACES:
        (folder / name).write_bytes((GOLDEN / "images" / name).read_bytes())
    return folder


@pytest.fixture(scope="session")
def golden_expected() -> dict:
    return json.loads((GOLDEN / "expected.json").read_text())


@pytest.fixture(scope="session")
def golden_model():
    """The reference iresnet50: counter-hash weights and BN statistics of the golden set."""
    from grafiqs.models.hashed_weights import hashed_state_dict
    from grafiqs.models.iresnet import build_iresnet

    model = build_iresnet("iresnet50")
    model.load_state_dict(hashed_state_dict(model, GOLDEN / "bn_stats.npz"))
    return model.eval()


@pytest.fixture(scope="session")
def golden_weights(tmp_path_factory, golden_model) -> Path:
    """The golden model as a plain .pth state dict, as a user would pass it with --weights."""
    path = tmp_path_factory.mktemp("golden_weights") / "iresnet50_golden.pth"
    torch.save(golden_model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def golden_images(tmp_path_factory, golden_expected) -> Path:
    """A folder with just the scored golden crops (the calibration crops are not scored)."""
    folder = tmp_path_factory.mktemp("golden_images")
    for name in golden_expected["meta"]["scored_images"]:
        (folder / name).write_bytes((GOLDEN / "images" / name).read_bytes())
    return folder


def tiny_iresnet(num_features: int = 32) -> IResNet:
    """A 4-stage iResNet small enough for fast tests, with BN statistics recorded on noise images."""
    torch.manual_seed(0)
    model = IResNet((1, 1, 1, 1), num_features=num_features, widths=(8, 16, 32, 64))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, 112, 112) * 2 - 1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save(tiny_iresnet().state_dict(), path)
    return path


def assert_close_to_golden(actual: float, expected: float, what: str) -> None:
    relative = abs(actual - expected) / abs(expected)
    assert relative <= 1e-3, f"{what}: {actual} vs golden {expected} (relative {relative:.2e})"


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail instead of hanging if a read blocks (a FIFO opened for reading waits for a writer)."""
    def stop(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
