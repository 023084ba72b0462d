"""The aligned-face check (grafiqs/faces/check.py): how often it flags faces and misses non-faces, and its cost.

    python benchmarks/bench_face_check.py [--threads 1]

Faces (each flag is a false flag): the golden crops (tests/data/golden, the astronaut aligned, degraded and
resized), clean synthetic faces of identities no threshold was chosen on (seed 1), crops aligned by
`FaceAligner` (score.py --align) from the astronaut placed rotated, scaled and shifted on canvases, and, for
information, degraded synthetic faces (the demo's seven degradations at severities 1-3). Non-faces (each
image not flagged is a miss): blank images, noise, drawn cars, scikit-image's motorcycle photos, whole photos
resized to 112x112 (the astronaut among them) and random square crops of the photos. Cost: milliseconds per
image of `FaceCheck` on batches of 16 (score.py's default batch), median over batches after a warm-up.
Prints a markdown table for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def face_sets(identities: int) -> dict[str, list]:
    import cv2
    import numpy as np
    from skimage import data

    from grafiqs.faces.align import FaceAligner
    from grafiqs.synthetic import render

    golden = sorted((ROOT / "tests" / "data" / "golden" / "images").glob("*.png"))
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    aligner, aligned = FaceAligner(), []
    for background in ("gray", "noise"):
        for angle in (-15, 0, 15):
            for scale in (0.7, 1.0, 1.4):
                matrix = cv2.getRotationMatrix2D((256, 256), angle, scale)
                matrix[:, 2] += [64, -16]
                canvas = (np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
                          if background == "noise" else np.full((480, 640, 3), 128, np.uint8))
                cv2.warpAffine(astronaut, matrix, (640, 480), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT)
                aligned.append(aligner(canvas, "canvas")[0])
    return {
        "golden crops (astronaut, aligned, degraded, resized)": [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in golden],
        "synthetic faces, clean (seed 1)": [render(1, 2_000_000 + i, s) for i in range(identities) for s in (0, 1)],
        "crops aligned by --align (astronaut on canvases)": aligned,
    }


def degraded_sets(identities: int) -> dict[str, list]:
    from grafiqs.synthetic import DEGRADATIONS, degrade, render

    faces = [render(1, 2_100_000 + i, 0) for i in range(identities)]
    return {f"synthetic, {kind} severity {severity}": [degrade(face, kind, severity, seed=i) for i, face in enumerate(faces)]
            for kind in DEGRADATIONS for severity in (1, 2, 3)}


def nonface_sets() -> dict[str, list]:
    import cv2
    import numpy as np
    from skimage import data

    from grafiqs.faces.nonfaces import blank, drawn_car, noise, resized_photo

    folder = Path(data.__file__).parent
    photos = {p.stem: cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(folder.glob("*")) if p.suffix in (".png", ".jpg")}
    photos = {name: photo for name, photo in photos.items() if photo is not None and min(photo.shape[:2]) >= 100}
    rng, crops = np.random.default_rng(5), []
    for name, photo in photos.items():
        if name == "astronaut":
            continue
        height, width = photo.shape[:2]
        for _ in range(4):
            side = int(rng.integers(min(height, width) // 3, min(height, width) + 1))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            crops.append(resized_photo(photo[top:top + side, left:left + side]))
    return {
        "blank": [blank(i) for i in range(20)],
        "noise (uniform, Gaussian, smooth blobs)": [noise(i) for i in range(30)],
        "drawn cars": [drawn_car(i) for i in range(50)],
        "vehicle photos (scikit-image motorcycle)": [resized_photo(photos[n]) for n in photos if n.startswith("motorcycle")],
        f"whole photos resized ({len(photos)}, astronaut included)": [resized_photo(p) for p in photos.values()],
        "random crops of photos, resized": crops,
    }


def readings(check, images: list):
    import torch

    from grafiqs.data.decode import to_model_tensor

    batch = torch.stack([to_model_tensor(image) for image in images])
    return check(batch)


def ms_per_image(check, images: list, batch_size: int = 16) -> float:
    import torch

    from grafiqs.data.decode import to_model_tensor

    batch = torch.stack([to_model_tensor(image) for image in images[:batch_size]])
    check(batch)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        check(batch)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the process (default: torch's own; on a CPU the check itself uses one)")
    parser.add_argument("--identities", type=int, default=150, help="synthetic identities per face set (default 150)")
    options = parser.parse_args()
    import torch

    from grafiqs.faces.check import MAX_ALIGNMENT_ERROR, MIN_FACE_PROBABILITY, FaceCheck, is_flagged

    if options.threads:
        torch.set_num_threads(options.threads)
    check = FaceCheck.pretrained()
    print(f"flagged: face_probability < {MIN_FACE_PROBABILITY} or alignment_error > {MAX_ALIGNMENT_ERROR:g} px; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}\n")
    print("| input | images | should be flagged | flagged | false-flag / miss rate | face_probability median (min-max) | "
          "alignment_error median (max) |")
    print("|---|---:|---|---:|---:|---|---|")
    kinds = [(name, images, False) for name, images in face_sets(options.identities).items()]
    kinds += [(name, images, True) for name, images in nonface_sets().items()]
    kinds += [(name, images, False) for name, images in degraded_sets(options.identities // 3).items()]
    totals = {False: [0, 0], True: [0, 0]}
    for name, images, should in kinds:
        probability, error = readings(check, images)
        flagged = sum(is_flagged(float(p), float(e)) for p, e in zip(probability, error))
        wrong = len(images) - flagged if should else flagged
        if "severity" not in name:
            totals[should][0] += wrong
            totals[should][1] += len(images)
        print(f"| {name} | {len(images)} | {'yes' if should else 'no'} | {flagged} | {wrong / len(images):.3f} | "
              f"{probability.median():.3f} ({probability.min():.3f}-{probability.max():.3f}) | "
              f"{error.median():.1f} ({error.max():.1f}) |")
    print(f"\nfaces (degraded ones not counted): false-flag rate {totals[False][0] / totals[False][1]:.4f} "
          f"({totals[False][0]} of {totals[False][1]}); non-faces: miss rate {totals[True][0] / totals[True][1]:.4f} "
          f"({totals[True][0]} of {totals[True][1]})")
    sample = face_sets(8)["synthetic faces, clean (seed 1)"]
    print(f"cost: {ms_per_image(check, sample):.2f} ms per image (FaceCheck, batches of 16, CPU; O-Net runs on one "
          "thread there, as in score.py)")


if __name__ == "__main__":
    main()
