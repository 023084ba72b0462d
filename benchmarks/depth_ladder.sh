#!/usr/bin/env bash
# The depth experiment's training ladder (issue 21): trains each rung of configs/train_fr/depth/
# in turn, resuming a rung from its newest last.ckpt (written every 100 steps, 10 minutes and
# epoch end; else from benchmarks/depth/<rung>_last.ckpt, committed when a session ended mid-rung)
# and skipping rungs whose backbone.ckpt exists. Logs: outputs/train/depth/<rung>.log
# A rung is a config under configs/train_fr/depth/: bundled, iresnet18, ..., or wide/bundled (the
# wide world). Precision: bf16-mixed where the CPU has bf16 units (AVX512-BF16 or AMX), else 32-true.
#   bash benchmarks/depth_ladder.sh [rung ...]      (default: bundled iresnet50 iresnet18 iresnet34)
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=offline
rungs=("$@"); [ ${#rungs[@]} -gt 0 ] || rungs=(bundled iresnet50 iresnet18 iresnet34)
precision=32-true
grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && precision=bf16-mixed
for rung in "${rungs[@]}"; do
  dir=outputs/train/depth/$rung
  if [ -f "$dir/backbone.ckpt" ]; then echo "$rung: done ($dir/backbone.ckpt)"; continue; fi
  mkdir -p "$dir"
  resume=()
  last=$(ls -t "$dir"/grafiqs/*/checkpoints/last.ckpt 2>/dev/null | head -1 || true)
  # on a fresh clone: the committed checkpoint an earlier session stopped at (benchmarks/depth/<rung>_last.ckpt)
  [ -z "$last" ] && [ -f "benchmarks/depth/${rung}_last.ckpt" ] && last=benchmarks/depth/${rung}_last.ckpt
  [ -n "$last" ] && resume=(--ckpt_path "$last")
  echo "$rung: $(date -u +%FT%TZ) start, precision $precision ${resume[*]}" | tee -a "$dir.log"
  start=$(date +%s)
  .venv/bin/python train_fr.py fit --config configs/train_fr/depth/base.yaml \
      --config "configs/train_fr/depth/$rung.yaml" --trainer.precision "$precision" "${resume[@]}" >> "$dir.log" 2>&1
  echo "$rung: $(date -u +%FT%TZ) finished in $(( $(date +%s) - start )) s" | tee -a "$dir.log"
done
