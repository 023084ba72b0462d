#!/usr/bin/env python
"""Curate a RecordIO training set by GraFIQs scores: `python curate.py --input train/ --scores scores/ --output_dir
curated/ --threshold 120 --min_images 5` (or `--config configs/curation/filter.yaml`).

Reads score.py's scores.csv of the set (score.py --image-path train/), keeps images by rule (a global threshold on a
group's magnitude, the best K or fraction per identity, identities with fewer than M images left dropped) and
writes a new train.rec/train.idx/property with identities.csv (kept and removed per identity), histogram.png
(the scores with the cut marked) and summary.json. The input set is only read. `--help` lists every option.

exit codes: 0 done; 2 bad config or input (checked before anything is created), or a container changed since it
was scored; 4 cannot write; 130 Ctrl-C; 143 SIGTERM
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

if __name__ == "__main__":
    from grafiqs.experiments.curation import main

    sys.exit(main())
