"""Will a training config fit its GPUs? The estimate (``memory``) of a job config on a layout, set against
the device memory, and what to change when it does not fit.

Torch-free: the device memory is given, or detected by the caller (``device.detected_memory``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from data_prep.tokenizer.manifest import MANIFEST_FILE, load_manifest
from pipeline.config.train import TrainJobConfig
from pipeline.plan.memory import STRATEGIES, Estimate, GiB, Layout, Workload, activation_bytes, estimate

ASSUMED_VOCAB = 32000
"""Llama 2's vocabulary, for a config whose vocabulary is neither set nor readable from its shards."""
USABLE_FRACTION = 0.9
"""Of a GPU's memory, what a run may plan to use: the CUDA context, NCCL's buffers and the allocator's
fragmentation take the rest."""
TP_DEGREES = (2, 4, 8)
TP_STRATEGIES = ("ddp", "fsdp")
"""The strategies lmpipe runs with tensor parallelism (``parallel.tp``)."""


@dataclass(frozen=True)
class Plan:
    """A config's workload on a layout, and the device memory it is checked against (None: unknown)."""

    work: Workload
    layout: Layout
    strategy: str
    device_bytes: float | None

    def estimate(self, strategy: str | None = None) -> Estimate:
        return estimate(strategy or self.strategy, self.work, self.layout)

    def fits(self, found: Estimate) -> bool | None:
        return None if self.device_bytes is None else found.total <= USABLE_FRACTION * self.device_bytes


def vocab_size(cfg: TrainJobConfig) -> tuple[int, str]:
    """The vocabulary to plan with, and where it came from."""
    if cfg.model.vocab_size:
        return cfg.model.vocab_size, "model.vocab_size"
    if cfg.data.shards and (Path(cfg.data.shards) / MANIFEST_FILE).is_file():
        return int(load_manifest(cfg.data.shards)["tokenizer"]["vocab_size"]), f"{cfg.data.shards} manifest"
    return ASSUMED_VOCAB, "assumed: no model.vocab_size and no shards manifest"


def plan_of(cfg: TrainJobConfig, *, nodes: int, gpus_per_node: int, device_bytes: float | None) -> Plan:
    """The plan of ``cfg`` on ``nodes`` x ``gpus_per_node``. Its ``parallel.tp`` and
    ``parallel.dp_replicate`` (1 where the config has no such fields) lay the ranks out."""
    work = Workload(
        args=cfg.model.args(vocab_size=vocab_size(cfg)[0]),
        micro_batch_size=cfg.train.micro_batch_size,
        precision=cfg.train.precision,
        activation_checkpointing=cfg.train.activation_checkpointing,
        offload=cfg.parallel.fsdp_cpu_offload or cfg.parallel.zero_offload_optimizer,
    )
    layout = Layout(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        tp=getattr(cfg.parallel, "tp", 1),
        dp_replicate=getattr(cfg.parallel, "dp_replicate", 1),
    )
    return Plan(work, layout, cfg.parallel.strategy, device_bytes)


def suggestions(plan: Plan) -> list[str]:
    """What would make the plan's own strategy fit, most local change first; empty when it fits or the
    device memory is unknown."""
    if plan.fits(plan.estimate()) is not False:
        return []
    found: list[str] = []
    work, layout = plan.work, plan.layout
    if not work.activation_checkpointing:
        checkpointed = dataclasses.replace(work, activation_checkpointing=True)
        if plan.fits(estimate(plan.strategy, checkpointed, layout)):
            found.append("train.activation_checkpointing=true")
    micro = _largest_micro_batch(plan)
    if micro:
        found.append(f"train.micro_batch_size={micro} (accumulation keeps the global batch)")
    degrees = TP_DEGREES if plan.strategy in TP_STRATEGIES else ()
    for tp in (t for t in degrees if layout.tp < t <= layout.gpus_per_node):
        if not layout.world_size % tp and plan.fits(
            estimate(plan.strategy, work, dataclasses.replace(layout, tp=tp))
        ):
            found.append(f"parallel.tp={tp} (tensor parallel within a node)")
            break
    for strategy in ("fsdp", "zero3") if layout.tp == 1 else ("fsdp",):
        if strategy != plan.strategy and plan.fits(estimate(strategy, work, layout)):
            found.append(f"parallel.strategy={strategy}")
            break
    nodes = _nodes_needed(plan)
    if nodes:
        found.append(f"{nodes} nodes of {layout.gpus_per_node} GPUs")
    if not work.offload and plan.strategy != "ddp":
        offloaded = dataclasses.replace(work, offload=True)
        if plan.fits(estimate(plan.strategy, offloaded, layout)):
            option = "fsdp_cpu_offload" if plan.strategy == "fsdp" else "zero_offload_optimizer"
            found.append(f"parallel.{option}=true (slower: the optimizer steps on the CPU)")
    return found


def _largest_micro_batch(plan: Plan) -> int:
    """The largest micro-batch below the plan's that fits (halving; 0: none does)."""
    micro = plan.work.micro_batch_size // 2
    while micro >= 1:
        work = dataclasses.replace(plan.work, micro_batch_size=micro)
        if plan.fits(estimate(plan.strategy, work, plan.layout)):
            return micro
        micro //= 2
    return 0


def _nodes_needed(plan: Plan, limit: int = 1024) -> int:
    """The fewest nodes (doubling, up to ``limit``) on which the plan's strategy fits; 0: none does, or
    more nodes do not help (ddp and zero1 replicate the weights)."""
    nodes = plan.layout.nodes * 2
    while nodes <= limit:
        layout = dataclasses.replace(plan.layout, nodes=nodes)
        if plan.fits(estimate(plan.strategy, plan.work, layout)):
            return nodes
        nodes *= 2
    return 0


def _gib(value: float) -> str:
    return f"{value / GiB:8.2f}"


def report(plan: Plan, *, device_line: str) -> str:
    """The table ``lmpipe plan memory`` prints: GiB per GPU of each strategy on the plan's layout."""
    work, layout = plan.work, plan.layout
    lines = [
        _layout_line(plan),
        f"device memory: {device_line}",
        "",
        f"{'GiB per GPU':<16}{'weights':>8} {'grads':>8} {'optim':>8} {'activ':>8} {'working':>8} "
        f"{'total':>8}  fits",
    ]
    for strategy in STRATEGIES:
        if layout.tp > 1 and strategy not in TP_STRATEGIES:
            continue
        found = plan.estimate(strategy)
        fits = {None: "?", True: "yes", False: "NO"}[plan.fits(found)]
        name = "hsdp" if strategy == "fsdp" and layout.dp_replicate > 1 else strategy
        mark = " *" if strategy == plan.strategy else ""
        lines.append(
            f"{name + mark:<16}{_gib(found.params)} {_gib(found.grads)} {_gib(found.optimizer)} "
            f"{_gib(found.activations)} {_gib(found.working)} {_gib(found.total)}  {fits}"
        )
    with_ac = activation_bytes(work, layout.tp, checkpointing=True)
    without = activation_bytes(work, layout.tp, checkpointing=False)
    lines += [
        "",
        "* the config's strategy. activ: the blocks' saved activations (Korthikanti et al. 2022, counted "
        "for this block; pipeline/plan/memory.py) plus the fused head's logits",
        f"blocks' activations: {without / GiB:.2f} GiB without activation checkpointing, "
        f"{with_ac / GiB:.2f} GiB with it",
    ]
    if plan.device_bytes is not None:
        lines.append(f"planned against {USABLE_FRACTION:.0%} of the device (context, NCCL, fragmentation)")
    advice = suggestions(plan)
    if advice:
        lines.append("does not fit; try: " + "; or ".join(advice))
    return "\n".join(lines)


def _layout_line(plan: Plan) -> str:
    work, layout, args = plan.work, plan.layout, plan.work.args
    checkpointing = "on" if work.activation_checkpointing else "off"
    return (
        f"{args.non_embedding_params() / 1e9:.2f}B non-embedding parameters, vocabulary {args.vocab_size}; "
        f"{layout.nodes} node(s) x {layout.gpus_per_node} GPU(s) = {layout.world_size} ranks: tp "
        f"{layout.tp}, data parallel {layout.dp} (shard {layout.dp_shard} x replicate "
        f"{layout.dp_replicate}); micro-batch {work.micro_batch_size} x {args.seq_len} tokens, "
        f"{work.precision}, activation checkpointing {checkpointing}"
    )


def fit_warning(plan: Plan) -> str:
    """One line when the plan's own strategy does not fit its devices; empty when it does or is unknown."""
    found = plan.estimate()
    if plan.fits(found) is not False or plan.device_bytes is None:
        return ""
    advice = suggestions(plan)
    return (
        f"{plan.strategy} needs ~{found.total / GiB:.1f} GiB per GPU on {plan.layout.world_size} ranks "
        f"(tp {plan.layout.tp}), more than {USABLE_FRACTION:.0%} of {plan.device_bytes / GiB:.0f} GiB"
        + (f"; try {'; or '.join(advice)}" if advice else "")
        + " (lmpipe plan memory)"
    )
