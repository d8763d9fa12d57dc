"""Bytes per GPU of a training run, by strategy and layout: weights, gradients, optimizer state, activations.

Torch-free arithmetic over the model's shape (``ModelArgs``), so ``lmpipe plan memory`` and ``lmpipe
launch`` answer in a fraction of a second, before a job waits in a queue to run out of memory.

What each strategy keeps, per element of the parameters it holds (P: this tensor-parallel rank's part of
the parameters; dp = world / tp data-parallel ranks, of which an HSDP group shards over dp / replicate):

============  =====================  ==================  ======================================
strategy      weights                gradients           AdamW state (2 fp32 moments + master)
============  =====================  ==================  ======================================
ddp           fp32, whole            fp32, whole + the   8 B, whole (the fp32 weights are the
                                     same in DDP buckets  master); bf16: autocast's weight copies
fsdp (HSDP)   fp32, sharded          fp32, sharded       8 B, sharded; bf16 is compute only
zero1         bf16 or fp32, whole    the same, whole     8 B + a 4 B fp32 master, sharded
zero2         bf16 or fp32, whole    fp32, sharded       8 B + 4 B, sharded
zero3         bf16 or fp32, sharded  fp32, sharded       8 B + 4 B, sharded
============  =====================  ==================  ======================================

(DeepSpeed's ZeRO keeps an fp32 partition of the weights for the optimizer in fp32 runs too.) Besides
the state: the weights a sharded strategy gathers to compute (FSDP: the root's embeddings and head for
the whole step, plus two blocks: the current one and the prefetched next; their unsharded gradients
before the reduce-scatter), the output head's logits and their fp32 softmax (the fused head and loss
runs 4,096 tokens at a time on GPUs), and the activations saved for backward.

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models", section 4), recounted for this block, with flash attention (no s x s scores kept) and no
dropout, in elements per token of one layer (h = d_model, kv = KV heads x head_dim, f = SwiGLU hidden):
attention 4h + 2kv (its input and normed input, q, k, v, output), SwiGLU 2h + 4f (input, normed input,
w1 and w3 outputs, the SiLU and the product), so 6h + 2kv + 4f, where their GPT block has 17h + 5as/h
(bytes/2). Tensor parallelism with sequence parallelism (TorchTitan's plan) divides all of it by tp.
With activation checkpointing a layer keeps only its input (h per token) and one layer's activations
live again during its recomputation.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.model.args import ModelArgs
from pipeline.model.chunks import LOSS_CHUNK_ROWS

STRATEGIES = ("ddp", "fsdp", "zero1", "zero2", "zero3")
"""``config.parallel``'s; fsdp on a layout with ``dp_replicate`` > 1 is HSDP."""
GiB = 1 << 30
ADAM_MOMENTS_BYTES = 8
"""exp_avg and exp_avg_sq, fp32."""
MASTER_BYTES = 4
GRAD_ACCUM_BYTES = 4
"""ZeRO-2/3's gradient partitions: fp32 under bf16 too (``parallel.zero.ds_config``)."""
DDP_BUCKET_BYTES = 4
"""DDP's gradient buckets (``gradient_as_bucket_view=False``): a second fp32 copy of every gradient."""


@dataclass(frozen=True)
class Layout:
    """How the ranks are arranged: ``nodes`` x ``gpus_per_node``, split into tensor-parallel groups of
    ``tp`` and data-parallel ranks (``world / tp``), which HSDP groups into ``dp_replicate`` replicas."""

    nodes: int = 1
    gpus_per_node: int = 1
    tp: int = 1
    dp_replicate: int = 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def dp(self) -> int:
        return self.world_size // self.tp

    @property
    def dp_shard(self) -> int:
        return self.dp // self.dp_replicate

    def problems(self) -> list[str]:
        """Why this layout cannot be built; empty: it can."""
        found = []
        if self.world_size % self.tp:
            found.append(f"tp {self.tp} does not divide {self.world_size} ranks")
        elif self.dp % self.dp_replicate:
            found.append(f"dp_replicate {self.dp_replicate} does not divide {self.dp} data-parallel ranks")
        return found


@dataclass(frozen=True)
class Workload:
    """What each rank computes: the resolved shape (vocabulary and context known), the micro-batch and
    the loop options that change memory."""

    args: ModelArgs
    micro_batch_size: int
    precision: str = "bf16"
    activation_checkpointing: bool = False
    offload: bool = False
    """fsdp_cpu_offload / zero_offload_optimizer (+ zero_offload_params): the sharded state in host memory."""

    @property
    def activation_bytes(self) -> int:
        return 2 if self.precision == "bf16" else 4

    @property
    def tokens(self) -> int:
        return self.micro_batch_size * self.args.seq_len


@dataclass(frozen=True)
class Estimate:
    """Bytes on each GPU, by what holds them."""

    strategy: str
    params: float
    grads: float
    optimizer: float
    activations: float
    """Saved for backward by the blocks, and the fused head's logits with their fp32 softmax."""
    working: float
    """Transient: gathered weights and their unsharded gradients, DDP's buckets, autocast's weight copies."""

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.working


def parameter_count(args: ModelArgs) -> int:
    """Every parameter, the embedding and output head included (a tied head once)."""
    head = 0 if args.tie_embeddings else args.vocab_size * args.d_model
    return args.non_embedding_params() + args.vocab_size * args.d_model + head


def block_params(args: ModelArgs) -> int:
    return (args.non_embedding_params() - args.d_model) // args.n_layers


def root_params(args: ModelArgs) -> int:
    """The parameters outside the blocks: embeddings, head, final norm (FSDP's root unit)."""
    return parameter_count(args) - args.n_layers * block_params(args)


def activation_elements_per_token(args: ModelArgs) -> int:
    """Elements one layer keeps for backward per token (the module docstring's count)."""
    kv = args.n_kv_heads * args.head_dim
    return 6 * args.d_model + 2 * kv + 4 * args.ffn_hidden


def activation_bytes(work: Workload, tp: int, *, checkpointing: bool) -> float:
    """Bytes of the activations one micro-batch keeps on one rank until backward."""
    args, size = work.args, work.activation_bytes
    per_layer = work.tokens * activation_elements_per_token(args) * size / tp
    if not checkpointing:
        return args.n_layers * per_layer
    return args.n_layers * work.tokens * args.d_model * size / tp + per_layer


def head_bytes(work: Workload, tp: int) -> float:
    """The fused head and loss (``pipeline.model.loss``) hold one chunk of ``LOSS_CHUNK_ROWS`` tokens at a
    time on a GPU: its logits in the compute dtype, their fp32 softmax and, under bf16, its gradient cast
    back; plus, under bf16, the fp32 sum of the head weight's gradient over the chunks. Tensor parallelism
    splits the vocabulary."""
    size, vocab = work.activation_bytes, work.args.vocab_size
    chunk = min(work.tokens, LOSS_CHUNK_ROWS) * vocab * (size + 4 + (size if size == 2 else 0))
    weight_grad_sum = vocab * work.args.d_model * 4 if size == 2 else 0
    return (chunk + weight_grad_sum) / tp


def estimate(strategy: str, work: Workload, layout: Layout) -> Estimate:
    """Bytes per GPU of ``work`` under ``strategy`` on ``layout`` (fsdp shards over ``layout.dp_shard``
    ranks: all data-parallel ones, or one replica's under HSDP). ZeRO with tp is arithmetic only: lmpipe
    runs tensor parallelism under ddp and fsdp."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
    tp = layout.tp
    p = parameter_count(work.args) / tp
    saved = activation_bytes(work, tp, checkpointing=work.activation_checkpointing)
    activations = saved + head_bytes(work, tp)
    if strategy == "ddp":
        autocast = 2 * p if work.precision == "bf16" else 0.0
        buckets = DDP_BUCKET_BYTES * p if layout.dp > 1 else 0.0
        return Estimate(strategy, 4 * p, 4 * p, ADAM_MOMENTS_BYTES * p, activations, buckets + autocast)
    if strategy == "fsdp":
        return _fsdp(work, layout, p / layout.dp_shard, activations)
    return _zero(strategy, work, layout, p, activations)


def _fsdp(work: Workload, layout: Layout, shard: float, activations: float) -> Estimate:
    args, tp = work.args, layout.tp
    compute = work.activation_bytes  # the policy's param dtype: bf16, or fp32 unchanged
    gathered = (root_params(args) + 2 * block_params(args)) / tp * compute
    unsharded_grads = (root_params(args) + block_params(args)) / tp * 4  # reduce_dtype fp32
    resident = 0.0 if work.offload else shard
    return Estimate(
        "fsdp",
        4 * resident,
        4 * resident,
        ADAM_MOMENTS_BYTES * resident,
        activations,
        gathered + unsharded_grads,
    )


def _zero(strategy: str, work: Workload, layout: Layout, p: float, activations: float) -> Estimate:
    stage = int(strategy[-1])
    args, dp = work.args, layout.dp
    weight_bytes = 2 if work.precision == "bf16" else 4
    params = weight_bytes * (p / dp if stage == 3 else p)
    # ZeRO-2/3 sum micro-batch gradients in fp32 partitions (zero.ds_config's grad_accum_dtype); ZeRO-1
    # keeps them whole in the weights' dtype.
    grads = weight_bytes * p if stage == 1 else GRAD_ACCUM_BYTES * p / dp
    optimizer = 0.0 if work.offload else (ADAM_MOMENTS_BYTES + MASTER_BYTES) * p / dp
    if stage == 3 and work.offload:
        params = 0.0
    gathered = (root_params(args) + 2 * block_params(args)) / layout.tp * weight_bytes if stage == 3 else 0.0
    return Estimate(strategy, params, grads, optimizer, activations, gathered)
