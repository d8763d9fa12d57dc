"""Config of the ``finetune`` verb: SFT data, LoRA, and the loop/parallel/checkpoint/tracking sections
it shares with pretraining. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.parallel import ParallelConfig
from pipeline.config.train import CheckpointConfig, LoopConfig, TrackingConfig, check_strategy_traits
from pipeline.core.config import Config, require, require_choice
from pipeline.model.lora_config import LoRAConfig

SFT_OVERLONG = ("truncate", "drop")
SFT_FIELDS = ("prompt", "response", "messages", "role", "content")
"""What ``data.columns`` can rename: a record's fields, then the keys inside each of its messages."""
SFT_ROLES = ("system", "user", "assistant")


@dataclass
class SFTDataConfig(Config):
    """Where the fine-tuning conversations come from and how they become rows (``pipeline.sft_data``)."""

    path: str = ""
    """Records {"prompt", "response"}, {"messages": [{"role", "content"}, ...]} or ShareGPT's
    {"conversations": [{"from", "value"}, ...]}: a .jsonl, .json, .parquet or .arrow file, or a
    directory written by ``datasets`` ``save_to_disk``; local only."""
    columns: dict[str, str] = field(default_factory=dict)
    """Our field -> the data's name for it, e.g. ``{prompt: instruction, response: output}``, or
    ``{messages: turns, role: speaker, content: text}`` (``role`` and ``content`` are the keys inside
    each message). Unnamed: prompt, response; messages or conversations; role or from; content or value."""
    roles: dict[str, str] = field(default_factory=dict)
    """The data's role name -> ours (system, user or assistant), e.g. ``{bot: assistant}``; added to
    the names known without it: ours, and ShareGPT's human (user) and gpt (assistant). A message with
    any other role makes its record bad (counted and skipped)."""
    split: str = "train"
    """The split of a saved DatasetDict to read (the val examples are still drawn by ``val_fraction``)."""
    val_fraction: float = 0.05
    overlong: str = "truncate"
    """An example longer than the model's seq_len: ``truncate`` (cut; dropped if nothing learned is
    left) or ``drop``. Both are counted and printed."""
    packing: bool = False
    """Several examples per seq_len row (attention kept
    within each); validation rows stay one example each."""

    def check(self, prefix: str) -> None:
        require(
            bool(self.path),
            f"{prefix}path",
            "give the fine-tuning data (a .jsonl file or a datasets directory)",
        )
        require(0.0 <= self.val_fraction < 1.0, f"{prefix}val_fraction", "must be in [0, 1)")
        require_choice(self.overlong, f"{prefix}overlong", SFT_OVERLONG)
        unknown = sorted(set(self.columns) - set(SFT_FIELDS))
        require(
            not unknown,
            f"{prefix}columns",
            f"unknown field {', '.join(unknown)}; map any of {', '.join(SFT_FIELDS)} to a column name",
        )
        require(
            all(isinstance(name, str) and name for name in self.columns.values()),
            f"{prefix}columns",
            "a column name must not be empty",
        )
        wrong = sorted(
            f"{theirs} -> {ours!r}" for theirs, ours in self.roles.items() if ours not in SFT_ROLES
        )
        require(
            not wrong, f"{prefix}roles", f"{', '.join(wrong)}: a role maps to one of {', '.join(SFT_ROLES)}"
        )


def _finetune_loop() -> LoopConfig:
    return LoopConfig(max_steps=60, lr=1e-3, warmup_steps=5, eval_interval=0, eval_batches=10)


@dataclass
class FinetuneJobConfig(Config):
    """``lmpipe finetune``: supervised fine-tuning from a pretrained checkpoint, loss on responses only."""

    init_from: str = ""
    """A checkpoint directory (step_N/) or a training output dir (its latest checkpoint is used)."""
    output_dir: str = "runs/finetune"
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    train: LoopConfig = field(default_factory=_finetune_loop)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self, prefix: str) -> None:
        require(bool(self.init_from), f"{prefix}init_from", "give the pretrained checkpoint (--init-from)")
        check_strategy_traits(self.checkpoint, self.train, self.parallel, prefix)
