#!/usr/bin/env python
"""FIQA methods x evaluation sets x FR models in one command: `python benchmark.py --config configs/benchmark/synthetic.yaml`.

Every key of the YAML can be overridden on the command line, e.g. `--output_dir out/x`,
`--devices 2`, `--cache_dir shared/cache` or `--wandb.mode online`; `--help` lists them all,
`--print_config` shows the resolved configuration.
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

if __name__ == "__main__":
    from grafiqs.experiments.benchmark import main

    sys.exit(main())
