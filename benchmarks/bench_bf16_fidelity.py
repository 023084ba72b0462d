"""Rank fidelity of `--precision bf16` to float32 scores on synthetic faces, per gradient group.

    python benchmarks/bench_bf16_fidelity.py --faces 160 --record

Draws --faces faces of unseen synthetic identities (clean, and each degradation at severity
1-3, so the scores spread as in a benchmark set), scores them in float32 and in bf16 with
the iresnet50 golden weights and with the bundled demo model, and reports Spearman's rank
correlation of bf16 against float32 and the worst relative difference, per group. --channels-last runs
bf16 as `score.py --precision bf16` does on a CPU.
--record appends the rows to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import sys

from bench_scorer import GROUPS, build_model
from results import add_row, machine


def synthetic_faces(count: int):
    import torch

    from grafiqs.data.decode import normalize, to_model_tensor
    from grafiqs.synthetic import DEGRADATIONS, degrade, render

    faces = []
    for i in range(count):
        face = render(seed=0, identity=9_000_000 + i // 22, sample=i % 22)
        kind = ("none", *DEGRADATIONS)[i % (len(DEGRADATIONS) + 1)]
        faces.append(face if kind == "none" else degrade(face, kind, 1 + i % 3, seed=i))
    return normalize(torch.stack([to_model_tensor(face) for face in faces]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="compiled stages on both sides (score.py --compile on)")
    parser.add_argument("--channels-last", action="store_true",
                        help="bf16 in the NHWC layout, as score.py --precision bf16 runs on a CPU (float32 stays NCHW)")
    parser.add_argument("--record", action="store_true", help="append the rows to benchmarks/RESULTS.md")
    args = parser.parse_args()

    import numpy as np
    import torch

    from grafiqs.evaluation.report import spearman
    from grafiqs.experiments.demo import DEMO_WEIGHTS
    from grafiqs.models.loading import load_backbone
    from grafiqs.quality.scorer import GraFIQsScorer

    images = synthetic_faces(args.faces)
    models = {"iresnet50 (golden weights)": lambda: build_model("iresnet50"),
              "demo model": lambda: load_backbone(None, DEMO_WEIGHTS)}
    for name, build in models.items():
        model = build()
        scores = {}
        for precision in ("32", "bf16"):
            scorer = GraFIQsScorer(model, precision=precision, compile=args.compile,
                                   channels_last=args.channels_last and precision == "bf16")
            batches = [scorer(images[i : i + args.batch_size]).scores for i in range(0, len(images), args.batch_size)]
            scores[precision] = {g: torch.cat([b[g] for b in batches]).numpy() for g in GROUPS}
            torch._dynamo.reset()  # the next scorer compiles its own graphs
        rho = [spearman(scores["bf16"][g], scores["32"][g]) for g in GROUPS]
        worst = max(float(np.max(np.abs(scores["bf16"][g] / scores["32"][g] - 1))) for g in GROUPS)
        spearmans = " / ".join(f"{r:.4f}" for r in rho)
        print(f"{name}: Spearman bf16 vs float32 ({', '.join(GROUPS)}) {spearmans}; worst rel. diff {worst:.1e}")
        if args.record:
            add_row("bf16 fidelity on synthetic faces (`benchmarks/bench_bf16_fidelity.py`)",
                    ["date", "model", "faces", "mode", f"Spearman ({' / '.join(GROUPS)})", "worst rel. diff", "command",
                     "machine"],
                    [datetime.date.today().isoformat(), name, str(args.faces),
                     ("compiled" if args.compile else "eager") + (", bf16 channels_last" if args.channels_last else ""),
                     spearmans, f"{worst:.1e}", "`python benchmarks/bench_bf16_fidelity.py " + " ".join(sys.argv[1:]) + "`",
                     f"{machine()}, torch {torch.__version__}"])


if __name__ == "__main__":
    main()
