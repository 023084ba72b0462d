"""Margin head at scale: memory per rank (meta-device arithmetic + one measured shard) and CPU step time.

    python benchmarks/bench_partial_fc.py --record

1. Memory per rank for `--memory-classes` (default 2M) classes, `--world-size` (default 8) ranks,
   512-d embeddings, 128 images per rank: the head's weights, gradient and SGD momentum, counted
   on the meta device (no storage), plus the [batch, classes] fp32 logits buffer of one step.
   The full head keeps all classes on every rank (logits for the local batch); partial FC keeps
   1/world of them (logits for the gathered global batch, times sample_rate).
2. `--measure-shard`: one rank's partial-FC step really run on this CPU (a world-size-1 head
   with 2M/8 classes and the global batch is exactly one rank's work minus the collectives),
   reporting the process's peak RSS above the state after allocating the shard's parameters.
3. Step time on 2 CPU processes (gloo): forward + backward + SGD step of the full head (with the
   all-reduce of its gradient that DDP performs) against partial FC at sample_rate 1 and 0.2.
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grafiqs.models.heads import ArcFaceHead  # noqa: E402
from grafiqs.models.partial_fc import PartialFCHead, class_range  # noqa: E402

FEATURES = 512


def head_memory(num_classes: int, world_size: int, per_rank_batch: int, sample_rate: float) -> dict[str, dict[str, float]]:
    """GB per rank of head state (weights + gradient + SGD momentum) and of one logits buffer."""
    with torch.device("meta"):
        full = ArcFaceHead(FEATURES, num_classes).weight
        start, end = class_range(num_classes, 0, world_size)  # rank 0 holds the largest shard
        shard = torch.empty(end - start, FEATURES)
    rows = {"full head": (full, per_rank_batch, num_classes),
            f"partial FC, sample_rate {sample_rate:g}": (shard, per_rank_batch * world_size, int(sample_rate * len(shard)))}
    result = {}
    for name, (weight, batch, columns) in rows.items():
        state = 3 * weight.numel() * weight.element_size()  # weights, gradient, momentum
        result[name] = {"state_gb": state / 1e9, "logits_gb": batch * columns * 4 / 1e9, "rows": weight.shape[0]}
    return result


def _measure_shard(queue, num_classes: int, world_size: int, per_rank_batch: int, sample_rate: float) -> None:
    """(peak RSS growth in GB during one step, seconds) of one rank's shard, in a fresh process (ru_maxrss is a high-water mark)."""
    torch.manual_seed(0)
    head = PartialFCHead(FEATURES, num_classes // world_size, sample_rate=sample_rate).shard_(0, 1)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    embeddings = torch.randn(per_rank_batch * world_size, FEATURES, requires_grad=True)
    labels = torch.randint(0, num_classes // world_size, (per_rank_batch * world_size,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    start = time.perf_counter()
    loss, _ = head(embeddings, labels)
    loss.backward()
    optimizer.step()
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6 - before, time.perf_counter() - start))


def measure_shard(*args) -> tuple[float, float]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure_shard, args=(queue, *args))
    child.start()
    result = queue.get()
    child.join()
    return result


def _timing_worker(rank: int, port: int, classes: int, batch: int, steps: int, out: dict) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(rank)
    embeddings = torch.randn(batch, FEATURES, requires_grad=True)
    labels = torch.randint(0, classes, (batch,))
    heads = {"full head (+ gradient all-reduce)": ArcFaceHead(FEATURES, classes),
             "partial FC, sample_rate 1": PartialFCHead(FEATURES, classes).shard_(rank, 2),
             "partial FC, sample_rate 0.2": PartialFCHead(FEATURES, classes, sample_rate=0.2).shard_(rank, 2)}
    for name, head in heads.items():
        optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
        times = []
        for _ in range(steps + 1):  # the first step warms up
            dist.barrier()
            start = time.perf_counter()
            loss, _ = head.loss_and_accuracy(embeddings, labels)
            loss.backward()
            if isinstance(head, ArcFaceHead):
                dist.all_reduce(head.weight.grad)  # what DDP does with a full head's gradient
            optimizer.step()
            optimizer.zero_grad()
            embeddings.grad = None
            times.append(time.perf_counter() - start)
        if rank == 0:
            out[name] = statistics.median(times[1:])
    dist.destroy_process_group()


def step_times(classes: int, batch: int, steps: int) -> dict[str, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_timing_worker, args=(port, classes, batch, steps, out), nprocs=2, start_method="spawn")
        return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory-classes", type=int, default=2_000_000)
    parser.add_argument("--world-size", type=int, default=8)
    parser.add_argument("--per-rank-batch", type=int, default=128)
    parser.add_argument("--measure-shard", action="store_true", help="also run one rank's 2M/8 shard step on this CPU")
    parser.add_argument("--time-classes", type=int, default=100_000)
    parser.add_argument("--time-batch", type=int, default=64, help="per process")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="add the rows to benchmarks/RESULTS.md")
    args = parser.parse_args()
    from results import add_row, machine

    date, host = datetime.date.today().isoformat(), machine()
    command = "python benchmarks/bench_partial_fc.py " + " ".join(sys.argv[1:])
    rows = []
    setting = f"{args.memory_classes:,} classes, world {args.world_size}, {args.per_rank_batch}/rank, 512-d"
    for sample_rate in (1.0, 0.2):
        for name, memory in head_memory(args.memory_classes, args.world_size, args.per_rank_batch, sample_rate).items():
            if name == "full head" and sample_rate != 1.0:
                continue
            rows.append([date, f"{name}: memory per rank ({setting}; meta arithmetic)",
                         f"{memory['state_gb']:.2f} GB weights+grad+momentum ({memory['rows']:,} centres), "
                         f"{memory['logits_gb']:.2f} GB per fp32 logits buffer", command, "arithmetic"])
    if args.measure_shard:
        for sample_rate in (1.0, 0.2):
            growth, seconds = measure_shard(args.memory_classes, args.world_size, args.per_rank_batch, sample_rate)
            rows.append([date, f"partial FC, sample_rate {sample_rate:g}: one rank's step measured ({setting})",
                         f"peak RSS +{growth:.2f} GB over its parameters, {seconds:.1f} s", command, host])
    for name, seconds in step_times(args.time_classes, args.time_batch, args.steps).items():
        rows.append([date, f"{name}: CPU step, 2 gloo processes, {args.time_classes:,} classes, {args.time_batch}/process",
                     f"{seconds * 1000:.0f} ms (median of {args.steps})", command, host])
    header = ["date", "what", "result", "command", "machine"]
    print("| " + " | ".join(header) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
        if args.record:
            add_row("Training: partial FC", header, row)


if __name__ == "__main__":
    main()
