"""Append a row to one table of benchmarks/RESULTS.md, creating its section the first time."""
from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def add_row(section: str, header: list[str], cells: list[str]) -> None:
    """Insert `cells` after the last table row of `## {section}` (or start that section at the end)."""
    row = "| " + " | ".join(cells) + " |"
    lines = RESULTS.read_text(encoding="utf-8").splitlines() if RESULTS.exists() else ["# Benchmarks"]
    title = f"## {section}"
    if title not in lines:
        lines += ["", title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), row]
    else:
        start = lines.index(title)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        table_rows = [i for i in range(start, end) if lines[i].startswith("|")]
        lines.insert((table_rows[-1] + 1) if table_rows else end, row)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


def machine() -> str:
    """CPU model and core count, for the tables' machine column."""
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{model}, {os.cpu_count()} cores"


def report(section: str, row: dict[str, str], record: bool, script: str, argv: list[str], machine_note: str = "") -> None:
    """Print `row` and, with `record`, append it with the command and the machine to `section`."""
    width = max(len(key) for key in row)
    for key, value in row.items():
        print(f"{key:>{width}}: {value}")
    if record:
        import torch

        command = f"python benchmarks/{script} " + " ".join(argv)
        add_row(section, [*row, "command", "machine"],
                [*row.values(), f"`{command}`", f"{machine()}, torch {torch.__version__}{machine_note}"])


def gemm_ceilings(size: int = 2048, repeats: int = 5, budget_s: float = 4.0) -> dict[str, float]:
    """This machine's float32 and bfloat16 GEMM GFLOP/s (best of up to `repeats` square products within about
    `budget_s`), measured in the same run as a benchmark so that its throughput reads as a fraction of what this
    machine can do. Without bf16 units (AMX, AVX512-BF16) a CPU's bf16 GEMM can be slower than float32."""
    import time

    import torch

    ceilings = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        a @ b  # warm-up
        times, started = [], time.perf_counter()
        while len(times) < repeats and (not times or time.perf_counter() - started < budget_s):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        ceilings[name] = 2 * size**3 / min(times) / 1e9
    return ceilings
