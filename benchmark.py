#!/usr/bin/env python
"""FIQA methods x evaluation sets x FR models in one command: `python benchmark.py --config configs/benchmark/synthetic.yaml`.

Every key of the YAML can be overridden on the command line, e.g. `--output_dir out/x`,
`--devices 2`, `--cache_dir shared/cache` or `--wandb.mode online`; `--help` lists them all,
`--print_config` shows the resolved configuration.

Every value is checked before anything is created or run (numbers against their ranges, e.g.
FMRs in (0, 1), the --config file and every file the config names as regular files, each set's
genuine and impostor pairs when it is loaded, before the passes); a problem is one `error: ...` line.

exit codes: 0 done; 2 bad config or input; 4 cannot write (the finished passes are kept in the
cache: the same command resumes); 130 Ctrl-C; 143 SIGTERM
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

if __name__ == "__main__":
    from grafiqs.experiments.benchmark import main

    sys.exit(main())
