"""Compilation time and compiled speed of the scorer's stages, against eager, in one process.

    python benchmarks/bench_compile.py --cache /tmp/inductor-cold            # cold: an empty cache folder
    python benchmarks/bench_compile.py --cache /tmp/inductor-cold            # again: warm (inductor's cache)
    python benchmarks/bench_compile.py --cache /tmp/other --granularity block

`stage` is what the engine compiles (one graph per stage); `block` compiles every residual block on
its own (dynamo's cache limit raised so that no block falls back to eager), an alternative measured
for its compilation time. iresnet50 with the golden counter-hash weights, golden crops, batch 16.
"""
import argparse
import os
import sys
import time

from bench_scorer import build_model, load_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, help="inductor's cache folder (empty: a cold compilation)")
    parser.add_argument("--granularity", choices=["stage", "block"], default="stage")
    args = parser.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache
    import torch

    from grafiqs.allocator import retain_freed_memory
    from grafiqs.quality.groups import VariantScorer

    retain_freed_memory()
    model, images = build_model("iresnet50"), load_images(16)
    engine = VariantScorer(model, compile="auto")
    eager = engine(images).columns
    if args.granularity == "block":
        torch._dynamo.config.cache_size_limit = torch._dynamo.config.accumulated_cache_size_limit = 512

        def blockwise(stage):
            blocks = [torch.compile(block, dynamic=False) for block in stage]

            def run(x):
                for block in blocks:
                    x = block(x)
                return x
            return run
        engine.__dict__["compiled_stages"] = [blockwise(stage) for stage in model.stages()]

    def batch_seconds(compiled: bool, repeats: int) -> float:
        engine.use_compiled = compiled
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            engine(images)
            times.append(time.perf_counter() - started)
        return min(times)

    engine.use_compiled = True
    started = time.perf_counter()
    compiled = engine(images).columns
    first = time.perf_counter() - started
    compiled_seconds, eager_seconds = batch_seconds(True, 3), batch_seconds(False, 2)
    worst = max(((compiled[k] - eager[k]).abs() / eager[k].abs()).max().item() for k in compiled if "group=" in k)
    print(f"{args.granularity}: compilation ~{first - compiled_seconds:.0f} s, compiled {16 / compiled_seconds:.2f} img/s, "
          f"eager {16 / eager_seconds:.2f} img/s, worst relative difference {worst:.1e}")


if __name__ == "__main__":
    sys.exit(main())
