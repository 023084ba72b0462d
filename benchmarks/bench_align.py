"""Throughput of face detection + ArcFace alignment, and of alignment from given landmarks.

    python benchmarks/bench_align.py --images 10 --record

The photo is scikit-image's astronaut (512x512) pasted on gray 640x480 and 1920x1080
canvases. Reported: images/s of `FaceAligner` detecting (MTCNN) and aligning on each canvas
(one image at a time; from the median time per image after one warm-up), images/s of alignment from given landmarks
(`align_face`, the 1920x1080 canvas), and the seconds `read_landmarks_file` takes for an
IJB-C-sized landmarks file (--ijbc-lines lines of `name x1 y1 ... x5 y5 score`).
--record appends a row to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results import report

SECTION = "Detection and alignment"


def canvas_with_astronaut(width: int, height: int):
    import cv2
    import numpy as np
    from skimage.data import astronaut

    photo = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)[:height, :width]
    canvas = np.full((height, width, 3), 128, np.uint8)
    left = (width - photo.shape[1]) // 2
    canvas[: photo.shape[0], left : left + photo.shape[1]] = photo
    return canvas


def images_per_second(function, image, count: int) -> float:
    """From the median time of `count` calls after a warm-up: robust to other processes on shared cores."""
    function(image)
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        function(image)
        seconds.append(time.perf_counter() - started)
    return 1 / statistics.median(seconds)


def landmarks_file_seconds(lines: int) -> float:
    import numpy as np

    from grafiqs.faces.align import read_landmarks_file

    points = np.random.default_rng(0).uniform(20, 100, (lines, 10))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ijbc_name_5pts_score.txt"
        path.write_text("".join(f"{i}.jpg " + " ".join(f"{v:.3f}" for v in p) + " 0.999\n" for i, p in enumerate(points)))
        started = time.perf_counter()
        assert len(read_landmarks_file(path)) == lines
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10, help="detections per canvas size")
    parser.add_argument("--align-images", type=int, default=1000, help="alignments from given landmarks")
    parser.add_argument("--ijbc-lines", type=int, default=470_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()

    import torch

    from grafiqs.faces.align import FaceAligner, align_face

    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    aligner = FaceAligner(device=args.device)
    canvases = {"640x480": canvas_with_astronaut(640, 480), "1920x1080": canvas_with_astronaut(1920, 1080)}
    detection = {size: images_per_second(lambda image: aligner(image, "canvas"), canvas, args.images)
                 for size, canvas in canvases.items()}
    _, landmarks, _ = aligner(canvases["1920x1080"], "canvas")
    aligning = images_per_second(lambda image: align_face(image, landmarks), canvases["1920x1080"], args.align_images)

    row = {
        "date": datetime.date.today().isoformat(),
        "detect + align 640x480": f"{detection['640x480']:.2f} img/s",
        "detect + align 1920x1080": f"{detection['1920x1080']:.2f} img/s",
        "align from landmarks": f"{aligning:.0f} img/s",
        f"read {args.ijbc_lines} landmark lines": f"{landmarks_file_seconds(args.ijbc_lines):.1f} s",
        "device": f"{args.device}, {torch.get_num_threads()} threads",
    }
    report(SECTION, row, args.record, "bench_align.py", sys.argv[1:], f"; load avg {load:.1f}")


if __name__ == "__main__":
    main()
