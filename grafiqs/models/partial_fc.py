"""Partial FC: the margin-softmax head with its class centres sharded over the ranks.

A full head keeps one [num_classes, num_features] matrix (plus its gradient and optimizer
state) on every process, and DDP all-reduces its whole gradient every step: at 2M identities
and 512-d embeddings that is 4 GB of weights per copy. Partial FC (An et al., "Killing Two
Birds with One Stone", CVPR 2022; insightface's arcface_torch) splits the classes instead:

1. every rank holds the centres of a contiguous class range (`class_range`);
2. the embeddings and labels of the whole global batch are all-gathered (the embeddings with
   an autograd all-gather whose backward sums every rank's partial gradient);
3. each rank computes the margin logits of the global batch against its own centres,
   optionally against all its positive classes plus a random `sample_rate` share of its
   negatives;
4. the softmax cross entropy is assembled across ranks from three all-reduces per sample:
   the max logit, the sum of exponentials and the target logit.

With `sample_rate=1` this is exactly the full head's loss on the global batch, and the
gradients every rank gets for its embeddings and centres are exactly the full head's. Every
rank computes the same loss value: the loss of the global batch.

The head's parameter is rank-local, so it must stay out of DDP (no gradient averaging, no
broadcast from rank 0): `FaceRecognitionModule` lists it in `_ddp_params_and_buffers_to_ignore`
and restores DDP's gradient scale for the backbone. Checkpoints hold the full matrix, gathered
shard by shard onto rank 0 (`gather_rows_to_rank0`); loading slices this rank's rows out of
any full matrix, so a run may resume on another number of processes.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from grafiqs.models.margins import CombinedMarginHead


def class_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of the classes rank `rank` holds: contiguous, sizes differ by at most one."""
    base, extra = divmod(int(num_classes), int(world_size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class _AllGatherRows(torch.autograd.Function):
    """cat(all ranks' tensors) along dim 0; backward: the sum over ranks of the gradients for
    this rank's rows (each rank's loss path only sees its own class centres)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def all_gather_rows(tensor: torch.Tensor, with_grad: bool = False) -> torch.Tensor:
    """Every rank's `tensor` (equal shapes) concatenated along dim 0, in rank order."""
    if with_grad:
        return _AllGatherRows.apply(tensor)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class _DistributedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross entropy of logits [N, local classes] whose classes are split over the
    ranks; `columns[i]` is sample i's target column on the rank that holds it, -1 on the others.

    Returns (loss, correct) with correct[i] = the target logit is the largest of all ranks'.
    The same loss value comes out on every rank; the gradient is that of this rank's logits.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, columns: torch.Tensor, distributed: bool):
        rows = torch.nonzero(columns >= 0, as_tuple=True)[0]
        targets = columns[rows]
        target_logit = torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
        target_logit[rows] = logits[rows, targets]
        row_max = logits.max(dim=1).values
        if distributed:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        probabilities = (logits - row_max[:, None]).exp_()
        row_sum = probabilities.sum(dim=1)
        if distributed:
            dist.all_reduce(row_sum)
            dist.all_reduce(target_logit)
        probabilities.div_(row_sum[:, None])
        loss = (row_max + row_sum.log() - target_logit).mean()  # log-sum-exp form: no underflow of p_target
        correct = target_logit >= row_max
        ctx.save_for_backward(probabilities, rows, targets)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor, _grad_correct):
        probabilities, rows, targets = ctx.saved_tensors
        # (softmax - one_hot) / N, built in the saved buffer: no second [N, classes] tensor.
        grad = probabilities
        grad[rows, targets] -= 1.0
        grad.mul_(grad_loss / grad.shape[0])
        return grad, None, None


class PartialFCHead(CombinedMarginHead):
    """Margin-softmax head whose class centres are split over the ranks (see the module docstring).

    The centres are allocated by `shard_(rank, world_size)`, not at construction, so that
    building the module never allocates the full matrix (`FaceRecognitionModule.configure_model`
    shards it once the process group exists). `forward(embeddings, labels)` takes this rank's
    local batch and returns (loss, accuracy) of the global batch.

    `sample_rate` < 1: per step each rank uses all classes of its shard that occur in the global
    batch plus uniformly drawn others, int(sample_rate * shard size) in all (more when the
    batch has more positives): arcface_torch's PFC-0.x. Accuracy is then over the sampled classes.
    """

    def __init__(
        self, num_features: int, num_classes: int, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
        sample_rate: float = 1.0, margin_grad: str = "exact", fp32: bool = False,
    ):
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        with torch.device("meta"):  # no storage until shard_()
            super().__init__(num_features, num_classes, s=s, m1=m1, m2=m2, m3=m3, margin_grad=margin_grad, fp32=fp32)
        self.sample_rate = float(sample_rate)
        self.rank, self.world_size = 0, 1
        self.class_start, self.class_end = 0, self.num_classes

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, sample_rate={self.sample_rate}, "
                f"classes {self.class_start}..{self.class_end - 1} of rank {self.rank}/{self.world_size}")

    @property
    def is_sharded(self) -> bool:
        return not self.weight.is_meta

    def shard_(self, rank: int, world_size: int) -> "PartialFCHead":
        """Allocate (on the default device) and initialise this rank's centres, N(0, 0.01) as insightface.

        The initialisation is seeded with torch.initial_seed() + rank, so shards differ from
        each other and a seeded run is reproducible.
        """
        self.rank, self.world_size = int(rank), int(world_size)
        self.class_start, self.class_end = class_range(self.num_classes, self.rank, self.world_size)
        weight = torch.empty(self.class_end - self.class_start, self.num_features)
        generator = torch.Generator(weight.device).manual_seed(torch.initial_seed() + self.rank)
        self.weight = torch.nn.Parameter(weight.normal_(0.0, 0.01, generator=generator))
        return self

    def sample_classes(self, local_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sorted shard rows to use, target column of each sample among them or -1) for `sample_rate` < 1.

        `local_labels`: the global batch's labels relative to this shard, -1 for other shards.
        Positives score 2 against uniform [0, 1) draws for the others, so top-k always keeps them.
        """
        num_local = self.weight.shape[0]
        on_shard = local_labels >= 0
        positives = torch.unique(local_labels[on_shard])
        keep = max(int(self.sample_rate * num_local), positives.numel())
        scores = torch.rand(num_local, device=local_labels.device)
        scores[positives] = 2.0
        selected = torch.topk(scores, keep, sorted=False).indices.sort().values
        columns = torch.full_like(local_labels, -1)
        columns[on_shard] = torch.searchsorted(selected, local_labels[on_shard])
        return selected, columns

    def loss_and_accuracy(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_sharded:
            raise RuntimeError("PartialFCHead: call shard_(rank, world_size) before use (the Lightning module does it in configure_model)")
        labels = labels.long().view(-1)
        distributed = self.world_size > 1
        if distributed:
            embeddings = all_gather_rows(embeddings, with_grad=True)
            labels = all_gather_rows(labels)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
        on_shard = (labels >= self.class_start) & (labels < self.class_end)
        columns = torch.where(on_shard, labels - self.class_start, torch.full_like(labels, -1))
        weight = self.weight
        if self.sample_rate < 1.0:
            selected, columns = self.sample_classes(columns)
            weight = weight[selected]
        logits = self.margin_logits(self.cosine(embeddings, weight), columns)
        loss, correct = _DistributedCrossEntropy.apply(logits, columns, distributed)
        return loss, correct.float().mean()

    forward = loss_and_accuracy  # a shard's logits alone mean nothing outside the distributed softmax

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint holds all classes' centres (gathered at save time): keep this rank's rows.
        key = prefix + "weight"
        incoming = state_dict.get(key)
        if incoming is not None and incoming.shape[0] == self.num_classes != self.weight.shape[0]:
            state_dict[key] = incoming[self.class_start:self.class_end]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def local_rows(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor over all classes (e.g. an optimizer state saved gathered)."""
        return full[self.class_start:self.class_end] if full.shape[0] == self.num_classes != self.weight.shape[0] else full

    def gather_rows_to_rank0(self, rows: torch.Tensor) -> torch.Tensor | None:
        """A per-class tensor of all ranks ([num_classes, ...]) assembled on rank 0's CPU; None on the others.

        Collective. Rank 0 receives one shard at a time, so its device never holds more than
        one other rank's shard (a plain all_gather would put the whole matrix on every GPU).
        """
        rows = rows.detach()
        if self.world_size == 1:
            return rows.cpu()
        if self.rank != 0:
            dist.send(rows.contiguous(), dst=0)
            return None
        parts = [rows.cpu()]
        for source in range(1, self.world_size):
            start, end = class_range(self.num_classes, source, self.world_size)
            buffer = rows.new_empty((end - start, *rows.shape[1:]))
            dist.recv(buffer, src=source)
            parts.append(buffer.cpu())
        return torch.cat(parts)
