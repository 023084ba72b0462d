"""One Lightning predict run with gradients over a dataset of images, shared by score.py and the benchmark passes.

Images are decoded in DataLoader workers and split over the DDP processes by `ShardSampler` (every item
exactly once, Lightning's own sampler refuses fewer items than processes); results go to disk through a
`BatchLogWriter` callback batch by batch (`return_predictions=False`), and predict runs with
`inference_mode=False` because the gradients are the score.
"""
from __future__ import annotations

import warnings
from typing import Callable

from grafiqs.errors import RunInterrupted


def predict(dataset, writer, make_module: Callable, *, accelerator="auto", devices=1, num_nodes: int = 1,
            batch_size: int = 16, num_workers: int = 1):
    """Run `make_module(trainer)` over `dataset` with `writer` as the callback; returns the Trainer.

    Ctrl-C and SIGTERM become RunInterrupted (the writer notes which signal); finished batches stay logged.
    """
    import lightning as L
    from torch.utils.data import DataLoader

    from grafiqs.data.folders import ShardSampler, collate_images

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_images,
                        sampler=ShardSampler(len(dataset)), persistent_workers=False)
    distributed = devices not in (1, "1") or num_nodes > 1
    trainer = L.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                        strategy="ddp" if distributed else "auto", inference_mode=False, use_distributed_sampler=False,
                        logger=False, enable_checkpointing=False, enable_model_summary=False, callbacks=[writer])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning's own deprecation noise
        module = make_module(trainer)
        try:
            trainer.predict(module, loader, return_predictions=False)
        except (SystemExit, KeyboardInterrupt):  # Lightning turns Ctrl-C into exit(1) after stopping its workers
            raise RunInterrupted(writer.stop_signal or 2) from None
    return trainer
