#!/usr/bin/env bash
# The GPU check of issue 24: on a machine with CUDA, records iresnet100 throughput, fidelity and memory in
# benchmarks/RESULTS.md in about 3-5 minutes, installing nothing: it takes the first Python whose torch sees a
# GPU, the project's .venv (`make setup`) or the machine's python3 (a lent GPU machine has PyTorch, no network).
set -euo pipefail
cd "$(dirname "$0")"
for python in ../.venv/bin/python python3; do
  if command -v "$python" >/dev/null && "$python" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    PYTHONPATH=.. exec "$python" gpu_check.py --record "$@"
  fi
done
echo "error: no Python here has a torch that sees a CUDA GPU; for a dry run: python gpu_check.py --device cpu --arch iresnet18 --images 8 --loop-images 4 --batch-sizes 4 --gemm-size 1024 --no-compile" >&2
exit 2
