#!/usr/bin/env python
"""GraFIQs ablations in one command: `python ablate.py --config configs/ablation/synthetic.yaml`."""
import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from grafiqs.errors import GrafiqsError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="ablate.py",
        description="Score every variant of a YAML ablation grid (loss terms, distance, BN layers, gradient groups, "
        "aggregation) on a verification pair set, evaluate each with EDC/pAUC (ISO/IEC 29794-1) beside random and "
        "known-severity discarding, and write a ranked table (results.csv/.md), EDC plots and a W&B run.",
    )
    parser.add_argument("--config", required=True, help="YAML file, e.g. configs/ablation/synthetic.yaml")
    parser.add_argument("--output-dir", help="override output_dir of the config")
    parser.add_argument("--weights", help="override the scored model's weights (.pth or train_fr.py .ckpt)")
    parser.add_argument("--wandb-mode", choices=["offline", "online", "disabled"],
                        help="override wandb.mode (default offline: sync later with `wandb sync <run dir>`)")
    args = parser.parse_args(argv)
    from grafiqs.allocator import retain_freed_memory
    from grafiqs.experiments.ablation import load_config, run_ablation

    retain_freed_memory()  # faster batches on CPU; see grafiqs/allocator.py

    try:
        config = load_config(args.config, {k: v for k, v in (("output_dir", args.output_dir), ("weights", args.weights)) if v})
        if args.wandb_mode:
            config["wandb"] = {**(config.get("wandb") or {}), "mode": args.wandb_mode}
        result = run_ablation(config)
    except GrafiqsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result["markdown"].read_text() if len(result["rows"]) <= 40 else f"ranked table: {result['markdown']}")
    print(f"wrote {result['table']}, {result['markdown']}, {', '.join(str(p) for p in result['plots'])}"
          + (f"; W&B run: {result['wandb_dir']}" if result["wandb_dir"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
