#!/usr/bin/env python
"""GraFIQs ablations: the benchmark runner with one set and the variant grid, `python ablate.py --config configs/ablation/synthetic.yaml`.

The config schema is benchmark.py's (`--help` lists every key); an ablation config names one
evaluation set, the scored model and the `methods.grafiqs` grid. The ranked table of the
variants is `ranked/<set>__<model>.md` in the output folder.

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

    sys.exit(main(prog="ablate.py"))
