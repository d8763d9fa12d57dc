"""The output head fused with the cross-entropy: the loss in one pass over the vocabulary, chunk by chunk
of rows, with no (tokens, vocab) logits kept.

Its own module so that what the data side needs of the loss (``IGNORE_INDEX``) comes without the model,
and the fused autograd function can be read and tested on its own (``linear_cross_entropy`` against
``F.linear`` then ``F.cross_entropy``). Under tensor parallelism the head's weight is split by vocabulary
rows (a DTensor, ``parallel.tensor_parallel``) and the same fused pass runs on each rank's rows
(``vocab_parallel_head``): the ranks exchange two numbers per token, never logits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard

from pipeline.model.chunks import LOSS_CHUNK_LOGITS, LOSS_CHUNK_ROWS

IGNORE_INDEX = -100
"""Targets with this value add nothing to the loss (prompt and padding positions in SFT)."""


class _LinearCrossEntropy(torch.autograd.Function):
    """The cross-entropy of ``x @ weight.T``, with its gradients computed in the forward pass, chunk by
    chunk of rows (as Liger-Kernel's fused linear cross-entropy). Unfused, a step writes the (tokens, vocab)
    logits, their log-softmax (kept for backward), a zero-filled gradient of that size and the
    log-softmax's backward: memory that grows with tokens x vocabulary, and on the CPU at our sizes
    traffic that adds about half the time of the head's three matmuls. Fused, each chunk's softmax minus
    its one-hot targets, the gradient of its logits, goes at once into the gradients of ``x`` and
    ``weight`` and is dropped; backward only scales them by the loss's gradient, exact since the loss is a
    scalar. No logits leave it: holding them until the optimizer step would cost what chunking saves."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        reduction: str,
        shard: VocabShard | None,
    ) -> torch.Tensor:
        """x (N, d) in the compute dtype, weight (V, d) in its own (cast to x's here, so its gradient is
        accumulated and returned in fp32 for an fp32 weight), targets (N,) -> loss ().
        With ``shard``, ``weight`` is this rank's rows of the vocabulary."""
        with _no_autocast(x.device.type):  # the caller chose the dtype; softmax in fp32
            loss, grad_x, grad_weight = _linear_cross_entropy(
                x,
                weight,
                targets,
                reduction=reduction,
                shard=shard,
                grad_x=ctx.needs_input_grad[0],
                grad_weight=ctx.needs_input_grad[1],
            )
        ctx.save_for_backward(grad_x, grad_weight)
        return loss

    @staticmethod
    def backward(
        ctx, grad_loss: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        grad_x, grad_weight = ctx.saved_tensors
        return (
            None if grad_x is None else grad_x * grad_loss,
            None if grad_weight is None else grad_weight * grad_loss,
            None,
            None,
            None,
        )


def loss_chunk_rows(x: torch.Tensor, vocab: int) -> int:
    """Rows per chunk of the fused head + loss: ``LOSS_CHUNK_LOGITS`` logits on the CPU, where the cache
    sets the size, ``LOSS_CHUNK_ROWS`` elsewhere, where memory does."""
    if x.device.type == "cpu":
        return max(1, LOSS_CHUNK_LOGITS // vocab)
    return LOSS_CHUNK_ROWS


def _linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    reduction: str,
    shard: VocabShard | None = None,
    grad_x: bool,
    grad_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The loss of the logits ``x @ weight.T`` (N, V), and its gradients with respect to ``x`` (in x's
    dtype) and ``weight`` (summed over chunks in fp32, returned in weight's dtype); None where not asked.
    With ``shard`` (``VocabShard``): ``weight``'s rows and its gradient are this rank's part of the
    vocabulary, and the gradient of ``x`` is this rank's term of a sum over ranks."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    valid = targets != IGNORE_INDEX
    row_weight = valid.float()  # each row's share of the loss: 1 per counted target, / their count for "mean"
    if reduction == "mean":
        row_weight /= valid.sum()
    w = weight.to(x.dtype)
    local = targets if shard is None else targets - shard.start
    # the target's logit is one of this rank's (without a shard always: an id past the vocabulary fails)
    hit = valid if shard is None else valid & (local >= 0) & (local < w.shape[0])
    target_ids = local.masked_fill(~hit, 0)[:, None]  # (N, 1); elsewhere arbitrary, weighted 0
    target_weight = (row_weight * hit)[:, None]
    row_loss = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    dx = torch.empty_like(x) if grad_x else None
    dw = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if grad_weight else None
    chunk = loss_chunk_rows(x, w.shape[0])
    for rows in (slice(start, start + chunk) for start in range(0, x.shape[0], chunk)):
        chunk_logits = torch.mm(x[rows], w.t()).float()  # (n, V)
        if shard is None:
            log_probs = torch.log_softmax(chunk_logits, dim=1)
            row_loss[rows] = -log_probs.gather(1, target_ids[rows]).squeeze(1)
        else:
            log_norm, target_logit = shard.log_norm_and_target(chunk_logits, target_ids[rows], hit[rows])
            row_loss[rows] = log_norm - target_logit
            log_probs = chunk_logits.sub_(log_norm[:, None])
        if dx is None and dw is None:
            continue
        # d loss / d logits: (softmax - one-hot target), times the row's share of the loss
        grad_logits = log_probs.exp_().mul_(row_weight[rows, None])
        grad_logits = grad_logits.scatter_add_(1, target_ids[rows], -target_weight[rows]).to(x.dtype)
        if dx is not None:
            torch.mm(grad_logits, w, out=dx[rows])
        if dw is not None and x.dtype == dw.dtype:
            dw.addmm_(grad_logits.t(), x[rows])
        elif dw is not None:  # summed in fp32: a low-precision sum would round at every chunk
            dw.add_(torch.mm(grad_logits.t(), x[rows]))
    loss = torch.where(valid, row_loss, 0.0).sum()
    return (
        loss / valid.sum() if reduction == "mean" else loss,
        dx,
        None if dw is None else dw.to(weight.dtype),
    )


@dataclass(frozen=True)
class VocabShard:
    """This rank's rows ``start:start + V_local`` of an output head split by vocabulary over ``group``
    (tensor parallelism): the softmax's normaliser and the target's logit come from every rank's rows,
    exchanged as two numbers per row, never as logits."""

    group: dist.ProcessGroup
    start: int

    def log_norm_and_target(
        self, logits: torch.Tensor, target_ids: torch.Tensor, hit: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row of (n, V_local) fp32 ``logits``: log of the softmax's normaliser over the whole
        vocabulary, and the target's logit (held by one rank: ``hit``)."""
        mine = torch.stack(
            [torch.logsumexp(logits, dim=1), torch.where(hit, logits.gather(1, target_ids).squeeze(1), 0.0)]
        )  # (2, n)
        every = [torch.empty_like(mine) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(every, mine, group=self.group)
        stacked = torch.stack(every)  # (ranks, 2, n)
        return torch.logsumexp(stacked[:, 0], dim=0), stacked[:, 1].sum(dim=0)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmuls run in: autocast's where it is on, else x's own. A device without
    autocast (``meta``, where tests measure the memory of an accelerator's path) has only x's."""
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _no_autocast(device: str) -> contextlib.AbstractContextManager:
    """Autocast off inside the fused head, on a device that has autocast."""
    if torch.amp.is_autocast_available(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """``F.cross_entropy(x @ weight.T in fp32, targets, ignore_index=IGNORE_INDEX)`` for x (..., d),
    weight (V, d), targets (...): the same value and gradients, computed fused and chunked
    (``_LinearCrossEntropy``), so the (tokens, vocab) logits never exist whole. Under autocast the
    matmuls run in its dtype, as ``F.linear``'s would."""
    return _LinearCrossEntropy.apply(
        x.reshape(-1, x.shape[-1]).to(_compute_dtype(x)), weight, targets.reshape(-1), reduction, None
    )


def vocab_parallel_head(
    x: torch.Tensor, weight: DTensor, targets: torch.Tensor | None, *, reduction: str = "mean"
) -> torch.Tensor:
    """``OutputHead``'s forward when tensor parallelism split ``weight`` (V, d) by vocabulary rows
    (``parallel.tensor_parallel``): ``x`` (..., d), sequence shards or replicated, is gathered whole on
    each rank of the group; with ``targets`` each rank runs the fused loss on its rows (``VocabShard``),
    the same loss on every rank. Without targets the whole logits (generation, evaluation), a plain
    tensor."""
    mesh = weight.device_mesh
    if not isinstance(x, DTensor):
        x = DTensor.from_local(x, mesh, [Replicate()], run_check=False)
    # Each rank's gradient of x is its rows' term: summed over ranks (reduce-scattered onto the sequence
    # shards the norm produced) in backward.
    x_local = x.redistribute(mesh, [Replicate()]).to_local(grad_placements=[Partial()])
    w_local = weight.to_local()
    dtype = _compute_dtype(x_local)
    if targets is None:
        logits = torch.matmul(x_local.to(dtype), w_local.to(dtype).t())
        return DTensor.from_local(logits, mesh, [Shard(-1)], run_check=False).full_tensor()
    shard = VocabShard(group=mesh.get_group(), start=mesh.get_local_rank() * w_local.shape[0])
    return _LinearCrossEntropy.apply(
        x_local.reshape(-1, x_local.shape[-1]).to(dtype), w_local, targets.reshape(-1), reduction, shard
    )


class OutputHead(nn.Linear):
    """The projection to the vocabulary; given targets, fused with the loss (``linear_cross_entropy``).
    A ``Linear`` whose weight stays ``output.weight``, and the loss is computed inside this module's
    own forward, where ZeRO-3 has gathered the weight as for any ``Linear``."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__(d_model, vocab_size, bias=False)

    def forward(  # optional targets widen Linear's forward, compatibly
        self, x: torch.Tensor, targets: torch.Tensor | None = None, *, reduction: str = "mean"
    ) -> torch.Tensor:
        """Logits (..., vocab); with ``targets``, the loss alone."""
        if isinstance(self.weight, DTensor):  # split by vocabulary rows (tensor parallelism)
            return vocab_parallel_head(x, self.weight, targets, reduction=reduction)
        if targets is None:
            return super().forward(x)
        return linear_cross_entropy(x, self.weight, targets, reduction=reduction)
