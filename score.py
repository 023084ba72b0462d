#!/usr/bin/env python
"""GraFIQs face image quality scores; run `python score.py --help`."""
import sys

from grafiqs.cli.score import main

if __name__ == "__main__":
    sys.exit(main())
