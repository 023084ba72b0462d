#!/usr/bin/env python
"""GraFIQs ablations: the benchmark runner with one set and the variant grid, `python ablate.py --config configs/ablation/synthetic.yaml`.

The config schema is benchmark.py's (`--help` lists every key); an ablation config names one
evaluation set, the scored model and the `methods.grafiqs` grid. The ranked table of the
variants is `ranked/<set>__<model>.md` in the output folder.
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

if __name__ == "__main__":
    from grafiqs.experiments.benchmark import main

    sys.exit(main(prog="ablate.py"))
