"""Supervised fine-tuning data: chat records as loss-masked token rows, one example per row or packed.

**Records.** ``{"prompt": P, "response": R}`` (one turn), ``{"messages": [{"role": "system" |
"user" | "assistant", "content": str}, ...]}`` (multi-turn) or ShareGPT's ``{"conversations":
[{"from": "system" | "human" | "gpt", "value": str}, ...]}``, read from a JSONL file (problems named
``file:line``) or a local Hugging Face dataset: a ``save_to_disk`` directory (``data.split`` picks
the split of a DatasetDict) or a .json/.parquet/.arrow file (``datasets.load_dataset``). Nothing is
downloaded: a path that does not exist, a hub name included, is an error. Other layouts are a
``Layout``: ``data.columns`` renames our fields, record and message keys alike (``{prompt:
instruction, response: output}``, ``{messages: turns, role: speaker, content: text}``), and
``data.roles`` names more roles (``{bot: assistant}``); a role known to neither makes a bad record.

**Template**, from the tokenizer's special tokens::

    <|system|> S                 only when the tokenizer has <|system|>; otherwise S + "\\n\\n" opens
                                 the first user turn (our tokenizer trainer adds no <|system|>)
    <|user|> U
    <|assistant|> A <|eos|>      per turn; the loss covers A and this EOS, nothing else

so a prompt/response record is ``<|user|> P <|assistant|> R <|eos|>``. A conversation is an optional
system message, then user and assistant turns alternating, ending with an assistant turn whose
content is not blank. Special-token strings inside the text stay plain text, as in pretraining.

**Length.** An example longer than ``seq_len`` (+1 for the shifted target) is cut to fit
(``overlong="truncate"``, kept if a learned token is left) or dropped (``"drop"``); both counted.
**Packing** puts several examples into one row in order of a seeded shuffle (next-fit), and the
batches carry per-row document starts (``TokenLoader(doc_starts=True)``'s format), so attention
stays within each example. RoPE scores depend only on the distance between tokens, so an example's
loss is the same packed or alone (up to float rounding; tested). Validation rows hold one example each.

A record goes to val when a hash of its text falls below ``val_fraction`` (stable across runs),
so duplicate records never straddle the split. Bad records are counted, the first few named, and
skipped; no usable example at all is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tokenizers import Tokenizer

from data_prep.tokenizer.tokenize import split_of
from pipeline.core.errors import InputError
from pipeline.finetune.records import BadRecord, Layout, Message, conversation, iter_records
from pipeline.model.loss import IGNORE_INDEX

__all__ = [
    "ASSISTANT",
    "EOS",
    "PAD",
    "SYSTEM",
    "USER",
    "ChatTokens",
    "Example",
    "SFTDataset",
    "SFTLoader",
    "SFTStats",
    "encode_example",
    "read_examples",
    "render",
    "render_prompt",
    "sft_eval_batches",
]

USER, ASSISTANT, SYSTEM, EOS, PAD = "<|user|>", "<|assistant|>", "<|system|>", "<|eos|>", "<|pad|>"
NAMED_PROBLEMS = 5


@dataclass(frozen=True)
class ChatTokens:
    user: int
    assistant: int
    eos: int
    pad: int
    system: int | None = None
    """None: the tokenizer has no <|system|>; a system message opens the first user turn."""

    @classmethod
    def of(cls, tokenizer: Tokenizer, where: str | Path) -> ChatTokens:
        tokens = {"user": USER, "assistant": ASSISTANT, "eos": EOS, "pad": PAD}
        found = {name: tokenizer.token_to_id(token) for name, token in tokens.items()}
        ids = {name: token_id for name, token_id in found.items() if token_id is not None}
        missing = [tokens[name] for name in found if name not in ids]
        if missing:
            raise InputError(
                f"{where}: tokenizer lacks the special tokens {' '.join(missing)} that SFT needs"
            )
        return cls(**ids, system=tokenizer.token_to_id(SYSTEM))


def render(tokenizer: Tokenizer, chat: ChatTokens, messages: list[Message]) -> tuple[list[int], list[int]]:
    """(tokens, labels) of a conversation by the template; a label is the token itself where it is
    learned (assistant content and its EOS), else IGNORE_INDEX."""
    if messages[0]["role"] == "system" and chat.system is None:
        system, first, *rest = messages
        messages = [{"role": "user", "content": f"{system['content']}\n\n{first['content']}"}, *rest]
    tokens: list[int] = []
    labels: list[int] = []
    for message in messages:
        text = tokenizer.encode(message["content"], add_special_tokens=False).ids
        if message["role"] == "assistant":
            learned = [*text, chat.eos]
            tokens += [chat.assistant, *learned]
            labels += [IGNORE_INDEX, *learned]
        else:
            # without <|system|> the system message opened the first user turn (above)
            marker = chat.user if message["role"] == "user" or chat.system is None else chat.system
            tokens += [marker, *text]
            labels += [IGNORE_INDEX] * (1 + len(text))
    return tokens, labels


def render_prompt(tokenizer: Tokenizer, chat: ChatTokens, messages: list[Message]) -> list[int]:
    """The context that asks for the next assistant turn: ``messages`` (ending in a user turn) by the
    template, then <|assistant|>. ``generate --chat`` feeds it to the model, and the exported chat
    template's ``add_generation_prompt`` gives the same ids."""
    return [*render(tokenizer, chat, messages)[0], chat.assistant]


class Example(NamedTuple):
    """One example's unpadded model inputs and their targets (``tokens[:-1]``, ``labels[1:]``)."""

    inputs: list[int]
    targets: list[int]
    truncated: bool


def encode_example(
    tokenizer: Tokenizer,
    chat: ChatTokens,
    messages: list[Message],
    *,
    seq_len: int,
    overlong: str = "truncate",
) -> Example | None:
    """The example, at most ``seq_len`` long; None when it is too long and ``overlong="drop"``, or
    when truncation leaves no learned token."""
    tokens, labels = render(tokenizer, chat, messages)
    truncated = len(tokens) > seq_len + 1
    if truncated:
        if overlong == "drop":
            return None
        tokens, labels = tokens[: seq_len + 1], labels[: seq_len + 1]
    targets = labels[1:]
    if all(label == IGNORE_INDEX for label in targets):
        return None
    return Example(tokens[:-1], targets, truncated)


@dataclass
class SFTStats:
    """What reading the records gave; ``finetune`` prints ``summary()`` and logs the counts."""

    records: int = 0
    examples: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    truncated: int = 0
    """Kept, cut to seq_len."""
    dropped_overlong: int = 0
    """Longer than seq_len and ``overlong="drop"``, or nothing learned left after truncation."""
    bad: int = 0
    problems: list[str] = field(default_factory=list)
    """``where: reason`` of the first few bad records."""

    def summary(self) -> str:
        parts = [
            f"{self.examples['train']} train / {self.examples['val']} val examples of {self.records} records"
        ]
        if self.truncated:
            parts.append(f"{self.truncated} truncated to seq_len")
        if self.dropped_overlong:
            parts.append(f"{self.dropped_overlong} dropped as longer than seq_len")
        if self.bad:
            parts.append(f"{self.bad} bad records skipped (first: {'; '.join(self.problems)})")
        return ", ".join(parts)

    def counts(self) -> dict[str, int]:
        return {
            "records": self.records,
            "train_examples": self.examples["train"],
            "val_examples": self.examples["val"],
            "truncated": self.truncated,
            "dropped_overlong": self.dropped_overlong,
            "bad_records": self.bad,
        }


def read_examples(
    path: str | Path,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    val_fraction: float,
    columns: Mapping[str, str] = {},
    roles: Mapping[str, str] = {},
    split: str = "train",
    overlong: str = "truncate",
) -> tuple[dict[str, list[Example]], SFTStats]:
    """The encoded examples of ``path`` by split (``train``, ``val``) in record order, and the counts;
    ``columns`` and ``roles`` as ``Layout.of`` takes them."""
    chat = ChatTokens.of(tokenizer, path)
    layout = Layout.of(columns, roles)
    examples: dict[str, list[Example]] = {"train": [], "val": []}
    stats = SFTStats()
    for where, record in iter_records(path, split=split):
        stats.records += 1
        try:
            messages = conversation(record, layout)
        except BadRecord as exc:
            stats.bad += 1
            if len(stats.problems) < NAMED_PROBLEMS:
                stats.problems.append(f"{where}: {exc}")
            continue
        side = split_of("\n".join(message["content"] for message in messages), val_fraction)
        example = encode_example(tokenizer, chat, messages, seq_len=seq_len, overlong=overlong)
        if example is None:
            stats.dropped_overlong += 1
            continue
        stats.truncated += example.truncated
        stats.examples[side] += 1
        examples[side].append(example)
    if not (examples["train"] or examples["val"]):
        raise InputError(f"no usable SFT example in {path}: {stats.summary()}")
    return examples, stats


class SFTDataset:
    """Rows of examples as ``inputs`` and ``targets`` tensors, (N, seq_len) int64, right-padded with
    ``pad`` (targets ignored). ``packing``: several examples per row, in order of the ``seed``
    shuffle, and ``doc_starts[i]`` the input positions where row ``i``'s examples begin."""

    def __init__(
        self, examples: Sequence[Example], *, seq_len: int, pad: int, packing: bool = False, seed: int = 0
    ):
        groups = (
            _pack(examples, seq_len=seq_len, seed=seed) if packing else [[example] for example in examples]
        )
        self.inputs = torch.full((len(groups), seq_len), pad, dtype=torch.int64)
        self.targets = torch.full((len(groups), seq_len), IGNORE_INDEX, dtype=torch.int64)
        self.doc_starts: list[np.ndarray] | None = [] if packing else None
        for row, group in enumerate(groups):
            lengths = np.array([len(example.inputs) for example in group], dtype=np.int64)
            used = int(lengths.sum())
            self.inputs[row, :used] = torch.tensor([t for example in group for t in example.inputs])
            self.targets[row, :used] = torch.tensor([t for example in group for t in example.targets])
            if self.doc_starts is not None:
                self.doc_starts.append(np.cumsum(lengths) - lengths)

    def __len__(self) -> int:
        return len(self.inputs)


def _pack(examples: Sequence[Example], *, seq_len: int, seed: int) -> list[list[Example]]:
    """Next-fit over the ``seed`` shuffle: a row takes examples until the next one does not fit."""
    groups: list[list[Example]] = []
    free = 0
    for i in np.random.default_rng(seed).permutation(len(examples)).tolist():
        example = examples[i]
        if len(example.inputs) > free:
            groups.append([])
            free = seq_len
        groups[-1].append(example)
        free -= len(example.inputs)
    return groups


class SFTLoader:
    """Infinite shuffled training batches for one rank, like ``data.TokenLoader``: epoch ``e`` is the
    permutation drawn from ``(seed, e)``, global sample ``g`` goes to rank ``g % world_size``, and the
    state is ``(seed, epoch, sample_index)``. Batches of a packed
    dataset carry the rows' document starts as a third item."""

    def __init__(
        self, dataset: SFTDataset, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0
    ):
        if len(dataset) == 0:
            raise InputError("no SFT training examples (all records went to val or were too long)")
        self.dataset, self.batch_size, self.rank, self.world_size, self.seed = (
            dataset,
            batch_size,
            rank,
            world_size,
            seed,
        )
        self.sample_index = 0
        self._permutation_epoch, self._permutation = -1, np.empty(0, dtype=np.int64)

    @property
    def epoch(self) -> int:
        return self.sample_index // len(self.dataset)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while True:
            step = self.batch_size * self.world_size
            mine = [
                self._row_of(g)
                for g in range(self.sample_index + self.rank, self.sample_index + step, self.world_size)
            ]
            self.sample_index += step
            batch = self.dataset.inputs[mine], self.dataset.targets[mine]
            starts = self.dataset.doc_starts
            yield batch if starts is None else (*batch, [starts[i] for i in mine])

    def _row_of(self, g: int) -> int:
        epoch, position = divmod(g, len(self.dataset))
        if epoch != self._permutation_epoch:
            self._permutation = np.random.default_rng((self.seed, epoch)).permutation(len(self.dataset))
            self._permutation_epoch = epoch
        return int(self._permutation[position])

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "sample_index": self.sample_index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.sample_index = int(state["seed"]), int(state["sample_index"])
        self._permutation_epoch = -1


def sft_eval_batches(
    dataset: SFTDataset, *, batch_size: int, rank: int = 0, world_size: int = 1, max_batches: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The rows in order, row ``i`` to rank ``i % world_size``, the same number of batches on every rank."""
    usable = len(dataset) - len(dataset) % world_size
    mine = torch.arange(rank, usable, world_size)
    for n, start in enumerate(range(0, len(mine), batch_size)):
        if max_batches and n == max_batches:
            return
        rows = mine[start : start + batch_size]
        yield dataset.inputs[rows], dataset.targets[rows]
