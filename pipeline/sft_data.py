"""Supervised fine-tuning data: prompt/response JSONL as fixed-length, loss-masked token rows.

A record ``{"prompt": P, "response": R}`` becomes ``<|user|> P <|assistant|> R <|eos|>``;
the targets are the next tokens with every position that predicts a prompt token (or
the markers) set to IGNORE_INDEX, so the loss covers only the response and its EOS.
Rows are right-padded with ``<|pad|>`` (targets ignored) or truncated to the model's
``seq_len``; a record whose response would be cut away entirely is dropped.
Special-token strings inside P or R stay plain text, as in pretraining.

A record goes to val when a hash of its text falls below ``val_fraction`` (stable
across runs), so duplicate records never straddle the split.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from data_prep.tokenizer.tokenize import split_of
from pipeline.model import IGNORE_INDEX

USER, ASSISTANT, EOS, PAD = "<|user|>", "<|assistant|>", "<|eos|>", "<|pad|>"


@dataclass(frozen=True)
class ChatTokens:
    user: int
    assistant: int
    eos: int
    pad: int

    @classmethod
    def of(cls, tokenizer: Tokenizer, where: str | Path) -> ChatTokens:
        tokens = {"user": USER, "assistant": ASSISTANT, "eos": EOS, "pad": PAD}
        ids = {name: tokenizer.token_to_id(token) for name, token in tokens.items()}
        missing = [tokens[name] for name, token_id in ids.items() if token_id is None]
        if missing:
            raise ValueError(f"{where}: tokenizer lacks the special tokens {' '.join(missing)} that SFT needs")
        return cls(**ids)


def read_records(path: str | Path) -> list[dict[str, str]]:
    """The prompt/response records of a JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data not found: {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not (isinstance(record, dict) and isinstance(record.get("prompt"), str)
                    and isinstance(record.get("response"), str)):
                raise ValueError(f"{path}:{number}: expected an object with string fields 'prompt' and 'response'")
            records.append({"prompt": record["prompt"], "response": record["response"]})
    return records


def encode_example(tokenizer: Tokenizer, chat: ChatTokens, prompt: str, response: str, *,
                   seq_len: int) -> tuple[list[int], list[int]] | None:
    """(inputs, targets) of length ``seq_len``, or None when truncation would leave no response token."""
    prompt_ids = [chat.user, *tokenizer.encode(prompt, add_special_tokens=False).ids, chat.assistant]
    response_ids = [*tokenizer.encode(response, add_special_tokens=False).ids, chat.eos]
    tokens = (prompt_ids + response_ids)[:seq_len + 1]
    if len(tokens) <= len(prompt_ids):
        return None
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    inputs, targets = tokens[:-1], labels[1:len(tokens)]
    padding = seq_len - len(inputs)
    return inputs + [chat.pad] * padding, targets + [IGNORE_INDEX] * padding


class SFTDataset:
    """One split of a JSONL file as ``inputs`` and ``targets`` tensors, (N, seq_len) int64."""

    def __init__(self, path: str | Path, tokenizer: Tokenizer, *, seq_len: int, split: str, val_fraction: float):
        chat = ChatTokens.of(tokenizer, path)
        rows, self.dropped = [], 0
        for record in read_records(path):
            if split_of(f"{record['prompt']}\n{record['response']}", val_fraction) != split:
                continue
            example = encode_example(tokenizer, chat, record["prompt"], record["response"], seq_len=seq_len)
            if example is None:
                self.dropped += 1
            else:
                rows.append(example)
        self.inputs = torch.tensor([inputs for inputs, _ in rows], dtype=torch.int64).reshape(-1, seq_len)
        self.targets = torch.tensor([targets for _, targets in rows], dtype=torch.int64).reshape(-1, seq_len)

    def __len__(self) -> int:
        return len(self.inputs)


class SFTLoader:
    """Infinite shuffled training batches for one rank, like ``data.TokenLoader``: epoch ``e`` is the
    permutation drawn from ``(seed, e)``, global sample ``g`` goes to rank ``g % world_size``, and the
    state is ``(seed, epoch, sample_index)``."""

    def __init__(self, dataset: SFTDataset, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if len(dataset) == 0:
            raise ValueError("no SFT training examples (all records went to val or were too long)")
        self.dataset, self.batch_size, self.rank, self.world_size, self.seed = dataset, batch_size, rank, world_size, seed
        self.sample_index = 0
        self._permutation_epoch, self._permutation = -1, np.empty(0, dtype=np.int64)

    @property
    def epoch(self) -> int:
        return self.sample_index // len(self.dataset)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            step = self.batch_size * self.world_size
            mine = [self._row_of(g) for g in range(self.sample_index + self.rank, self.sample_index + step,
                                                    self.world_size)]
            self.sample_index += step
            yield self.dataset.inputs[mine], self.dataset.targets[mine]

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


def sft_eval_batches(dataset: SFTDataset, *, batch_size: int, rank: int = 0, world_size: int = 1,
                     max_batches: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The rows in order, row ``i`` to rank ``i % world_size``, the same number of batches on every rank."""
    usable = len(dataset) - len(dataset) % world_size
    mine = torch.arange(rank, usable, world_size)
    for n, start in enumerate(range(0, len(mine), batch_size)):
        if max_batches and n == max_batches:
            return
        rows = mine[start:start + batch_size]
        yield dataset.inputs[rows], dataset.targets[rows]
