"""Partial FC: sharded class centres on 2 CPU processes (gloo) against the full single-process head."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.multiprocessing as mp

from grafiqs.models.heads import ArcFaceHead, build_head
from grafiqs.models.partial_fc import PartialFCHead, class_range

CLASSES, FEATURES, PER_RANK, WORLD = 11, 16, 4, 2  # 11 classes: shards of 6 and 5


def problem():
    """The global batch, its labels (most classes of both shards occur) and the class centres."""
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(WORLD * PER_RANK, FEATURES, generator=generator)
    labels = torch.tensor([0, 3, 3, 7, 10, 5, 8, 1])
    weight = torch.randn(CLASSES, FEATURES, generator=generator)
    return embeddings, labels, weight


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # forked from a process whose thread pool may be running: stay single-threaded
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    embeddings, labels, weight = problem()
    local = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    results = {}
    for name, sample_rate in (("exact", 1.0), ("sampled", 0.9)):
        head = PartialFCHead(FEATURES, CLASSES, s=16.0, m2=0.5, sample_rate=sample_rate).shard_(rank, WORLD)
        with torch.no_grad():
            head.weight.copy_(weight[head.class_start:head.class_end])
        x = embeddings[local].clone().requires_grad_()
        torch.manual_seed(100 + rank)  # the negatives this rank draws
        loss, accuracy = head(x, labels[local])
        loss.backward()
        columns = torch.where((labels >= head.class_start) & (labels < head.class_end), labels - head.class_start, -1)
        torch.manual_seed(100 + rank)
        selected = head.sample_classes(columns)[0] + head.class_start if sample_rate < 1 else None
        results[name] = {"loss": loss.detach(), "accuracy": accuracy, "x_grad": x.grad, "weight_grad": head.weight.grad,
                         "rows": (head.class_start, head.class_end), "selected": selected}
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("pfc")
    with socket.socket() as probe:  # a free port for the gloo rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_worker, args=(port, str(out)), nprocs=WORLD, start_method="fork")  # fork: no re-imports
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def full_head_reference(columns=None):
    """Loss, accuracy and gradients of the full head on the global batch (optionally only some classes)."""
    embeddings, labels, weight = problem()
    head = ArcFaceHead(FEATURES, CLASSES, s=16.0, m=0.5)
    with torch.no_grad():
        head.weight.copy_(weight)
    x = embeddings.clone().requires_grad_()
    if columns is None:
        loss, accuracy = head.loss_and_accuracy(x, labels)
    else:  # the softmax over the sampled classes only
        logits = head(x, labels)[:, columns]
        targets = torch.searchsorted(columns, labels)
        loss, accuracy = F.cross_entropy(logits, targets), (logits.argmax(1) == targets).float().mean()
    loss.backward()
    return loss.detach(), accuracy, x.grad, head.weight.grad


def test_two_process_partial_fc_equals_the_full_head(two_ranks):
    loss, accuracy, x_grad, weight_grad = full_head_reference()
    assert [r["exact"]["rows"] for r in two_ranks] == [(0, 6), (6, 11)]
    for rank, result in enumerate(two_ranks):
        exact = result["exact"]
        torch.testing.assert_close(exact["loss"], loss)  # the global batch's loss on every rank
        assert exact["accuracy"] == accuracy
        torch.testing.assert_close(exact["x_grad"], x_grad[rank * PER_RANK:(rank + 1) * PER_RANK], rtol=1e-5, atol=1e-7)
        start, end = exact["rows"]
        torch.testing.assert_close(exact["weight_grad"], weight_grad[start:end], rtol=1e-5, atol=1e-7)


def test_sampled_partial_fc_keeps_every_positive_and_is_the_softmax_over_the_sampled_classes(two_ranks):
    _, labels, _ = problem()
    selected = torch.cat([r["sampled"]["selected"] for r in two_ranks])
    assert set(labels.tolist()) <= set(selected.tolist())
    assert [len(r["sampled"]["selected"]) for r in two_ranks] == [5, 4]  # int(0.9 * 6), int(0.9 * 5): one negative each
    loss, accuracy, x_grad, weight_grad = full_head_reference(columns=selected)
    for rank, result in enumerate(two_ranks):
        sampled = result["sampled"]
        torch.testing.assert_close(sampled["loss"], loss)
        torch.testing.assert_close(sampled["x_grad"], x_grad[rank * PER_RANK:(rank + 1) * PER_RANK], rtol=1e-5, atol=1e-7)
        start, end = sampled["rows"]
        torch.testing.assert_close(sampled["weight_grad"], weight_grad[start:end], rtol=1e-5, atol=1e-7)
        unused = torch.ones(end - start, dtype=torch.bool)
        unused[sampled["selected"] - start] = False
        assert not sampled["weight_grad"][unused].any()  # classes not drawn get no gradient


def test_sampling_always_keeps_the_positives():
    head = PartialFCHead(8, 1000, sample_rate=0.1).shard_(0, 1)
    for seed in range(20):
        torch.manual_seed(seed)
        labels = torch.randint(0, 1000, (int(torch.randint(1, 300, ()).item()),))
        selected, columns = head.sample_classes(labels)
        assert set(labels.tolist()) <= set(selected.tolist())
        assert len(selected) == max(100, len(set(labels.tolist()))) and torch.equal(selected[columns], labels)


def test_shards_cover_the_classes_and_reshard_from_any_saved_world_size():
    assert [class_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    full = torch.randn(10, 8)
    for world in (1, 2, 3, 4):
        rows = []
        for rank in range(world):
            head = PartialFCHead(8, 10).shard_(rank, world)
            head.load_state_dict({"weight": full})  # a checkpoint holds all classes
            rows.append(head.weight.detach())
        assert torch.equal(torch.cat(rows), full)


def test_module_cuts_the_saved_optimizer_state_to_its_shard():
    from grafiqs.lit.fr_module import FaceRecognitionModule  # not at the top: the spawned workers import this file

    module = FaceRecognitionModule(num_classes=10, arch="custom", layers=[1, 1, 1, 1], widths=[4, 4, 4, 4], num_features=8,
                                   head="partial_fc")
    module.head.shard_(2, 3)  # what configure_model does on rank 2 of 3
    index = module._head_state_index()
    momentum = torch.arange(80.0).view(10, 8)
    checkpoint = {"optimizer_states": [{"state": {index: {"momentum_buffer": momentum, "step": torch.tensor(5.0)}}}]}
    module.on_load_checkpoint(checkpoint)
    state = checkpoint["optimizer_states"][0]["state"][index]
    assert torch.equal(state["momentum_buffer"], momentum[7:10]) and state["step"] == 5.0


def test_partial_fc_needs_shard_and_refuses_other_heads_options():
    head = build_head("cosface", 8, 5, head="partial_fc", sample_rate=0.5)
    with pytest.raises(RuntimeError, match="shard_"):
        head(torch.randn(2, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs head='partial_fc'"):
        build_head("arcface", 8, 5, sample_rate=0.5)
    with pytest.raises(ValueError, match="sample_rate"):
        PartialFCHead(8, 5, sample_rate=0.0)
