"""What this machine's hardware does fast, for advice in score.py's summary (never for a default that
changes scores: bf16 stays an explicit opt-in)."""
from __future__ import annotations

from pathlib import Path

# CPU flags (Linux /proc/cpuinfo) of native bfloat16 matrix units: Intel AMX and AVX-512 BF16 (Intel, AMD Zen 4+).
BF16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def bf16_units(torch) -> list[str]:
    """Names of this machine's native bfloat16 units: CUDA GPUs that support bf16, and CPU flags."""
    units = []
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        units.append(f"CUDA bf16 ({torch.cuda.get_device_name()})")
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:  # not Linux
        flags = []
    return units + [name for flag, name in BF16_CPU_FLAGS.items() if flag in flags]
