#!/usr/bin/env python
"""GraFIQs ablations in one command: `python ablate.py --config configs/ablation/synthetic.yaml`.

Every key of the YAML can be overridden on the command line, e.g. `--output_dir out/x`,
`--weights backbone.pth`, `--data.synthetic.num_identities 20` or `--wandb.mode online`;
`--help` lists them all, `--print_config` shows the resolved configuration.
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from grafiqs.errors import GrafiqsError  # noqa: E402


def main(argv=None) -> int:
    from grafiqs.allocator import retain_freed_memory
    from grafiqs.experiments.ablation import load_config, run_ablation

    retain_freed_memory()  # faster batches on CPU; see grafiqs/allocator.py
    try:
        result = run_ablation(load_config(overrides=sys.argv[1:] if argv is None else argv))
    except GrafiqsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result["markdown"].read_text() if len(result["rows"]) <= 40 else f"ranked table: {result['markdown']}")
    print(f"wrote {result['table']}, {result['markdown']}, {', '.join(str(p) for p in result['plots'])}"
          + (f"; W&B run: {result['wandb_dir']}" if result["wandb_dir"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
