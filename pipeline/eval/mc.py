"""Multiple-choice likelihood eval: which continuation of a context does the model find most likely?

A task is a JSONL file of ``{"context": str, "choices": [str, ...], "answer": int}`` records. Each
choice is scored by the sum of the log-probabilities of its tokens given the context, as
lm-evaluation-harness scores ``loglikelihood`` tasks: ``acc`` takes the best sum, ``acc_norm`` the
best sum per character of the choice (harness's ``acc_norm``), which removes the bias towards
short choices. Context and choice are tokenized apart and joined, so a choice carries its own
leading space (``" Paris"``), as in the harness's tasks. The sequence starts with EOS, the token
every pretraining document follows, so the context reads as the start of a document; a sequence
longer than the model's window loses context tokens from the left.

A malformed record (bad JSON, a missing or mistyped field, an answer out of range, an empty
choice, a choice longer than the window) is skipped with a warning naming file:line, and counted;
a file without one valid record is an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from pipeline.core.errors import InputError, MissingInputError
from pipeline.model.transformer import Transformer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MCRecord:
    line: int
    context: str
    choices: tuple[str, ...]
    answer: int


def read_mc_records(path: str | Path) -> tuple[list[MCRecord], int]:
    """(the valid records, the number skipped) of a task file; warns about each record it skips."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"multiple-choice task not found: {path}")
    records, skipped = [], 0
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record, problem = _parse(line)
            if problem:
                log.warning("%s:%d: skipped: %s", path, number, problem)
                skipped += 1
            else:
                records.append(
                    MCRecord(number, record["context"], tuple(record["choices"]), record["answer"])
                )
    return records, skipped


def _parse(line: str) -> tuple[dict, str]:
    """(the record, '') or ({}, what is wrong with it)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON ({exc.msg})"
    if not isinstance(record, dict):
        return {}, "expected a JSON object"
    choices, answer = record.get("choices"), record.get("answer")
    if not isinstance(record.get("context"), str):
        return {}, "'context' must be a string"
    if not (
        isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c for c in choices)
    ):
        return {}, "'choices' must be a list of at least 2 non-empty strings"
    if not (isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices)):
        return {}, f"'answer' must be an index into the {len(choices)} choices"
    return record, ""


@torch.no_grad()
def choice_log_likelihoods(model: Transformer, context: list[int], choices: list[list[int]]) -> list[float]:
    """Sum of log p(choice tokens | context) for each choice, in one batch; ``context`` is cut from
    the left so that every sequence fits the model's window."""
    seq_len = model.args.seq_len
    rows = [(context + choice)[-(seq_len + 1) :] for choice in choices]
    width = max(len(row) for row in rows) - 1
    inputs = torch.zeros(len(rows), width, dtype=torch.int64)  # right padding, never scored
    for r, row in enumerate(rows):
        inputs[r, : len(row) - 1] = torch.tensor(row[:-1])
    log_probs = torch.log_softmax(model(inputs).float(), dim=-1)  # (choices, T, vocab)
    scores = []
    for r, (row, choice) in enumerate(zip(rows, choices)):
        positions = torch.arange(len(row) - 1 - len(choice), len(row) - 1)  # those that predict the choice
        scores.append(float(log_probs[r, positions, torch.tensor(choice)].sum()))
    return scores


def evaluate_mc(model: Transformer, tokenizer: Tokenizer, path: str | Path, *, eos_id: int) -> dict:
    """``{"task", "path", "records", "skipped", "acc", "acc_norm"}`` of the task file at ``path``."""
    path = Path(path)
    records, skipped = read_mc_records(path)
    correct = correct_norm = scored = 0
    for record in records:
        choices = [tokenizer.encode(choice, add_special_tokens=False).ids for choice in record.choices]
        if max(map(len, choices)) > model.args.seq_len:
            log.warning(
                "%s:%d: skipped: a choice is longer than the model's window of %d tokens",
                path,
                record.line,
                model.args.seq_len,
            )
            skipped += 1
            continue
        context = [eos_id, *tokenizer.encode(record.context, add_special_tokens=False).ids]
        scores = choice_log_likelihoods(model, context, choices)
        per_char = [score / len(choice) for score, choice in zip(scores, record.choices)]
        correct += _argmax(scores) == record.answer
        correct_norm += _argmax(per_char) == record.answer
        scored += 1
    if not scored:
        raise InputError(
            f"{path}: no valid multiple-choice record ({skipped} skipped); expected JSONL of "
            '{"context": str, "choices": [str, ...], "answer": int}'
        )
    return {
        "task": path.stem,
        "path": str(path),
        "records": scored,
        "skipped": skipped,
        "acc": correct / scored,
        "acc_norm": correct_norm / scored,
    }


def _argmax(values: list[float]) -> int:
    """The first index of the largest value (ties go to the earlier choice)."""
    return max(range(len(values)), key=values.__getitem__)
