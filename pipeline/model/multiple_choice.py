"""Multiple-choice scoring by log-likelihood, as lm-evaluation-harness scores ``multiple_choice`` tasks.

Both ``lmpipe eval --mc`` (``pipeline.eval.mc``) and the in-loop downstream eval of pretraining
(``pipeline.train.downstream``) score here, so the two report the same numbers for the same weights.
It lives beside the model, not in ``pipeline.eval``, because training may not import the eval verbs.

A task is a JSONL file of ``{"context": str, "choices": [str, ...], "answer": int}`` records. A choice
carries its own leading space (``" Paris"``): the harness's ``target_delimiter`` written into the choice.
Each choice is scored by the sum of the log-probabilities of its tokens given the context alone (no
EOS before it, as the harness conditions); an empty context starts from EOS, the token every
pretraining document follows, which the export names BOS, as the harness's ``prefix_token_id``.
``acc`` takes the best sum, ``acc_norm`` the best sum per character of the choice without its leading
space (the harness divides by the length of the choice without the delimiter). Context and choice are
tokenized apart and joined; a sequence longer than the window loses context tokens from the left.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from pipeline.core.errors import MissingInputError
from pipeline.model.transformer import Transformer

log = logging.getLogger(__name__)

DELIMITER = " "
"""The leading text of a choice that ``acc_norm`` does not count (the harness's ``target_delimiter``)."""


@dataclass(frozen=True)
class MCRecord:
    line: int
    context: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class MCRequest:
    """One record, tokenized: what ``score_requests`` needs, with no tokenizer in sight."""

    line: int
    context: tuple[int, ...]
    choices: tuple[tuple[int, ...], ...]
    norms: tuple[int, ...]
    """Characters of each choice without its leading delimiter (at least 1)."""
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


def tokenize_records(
    records: list[MCRecord], tokenizer: Tokenizer, *, eos_id: int, seq_len: int, path: str | Path
) -> tuple[list[MCRequest], int]:
    """(the requests, the number of records skipped because a choice does not fit ``seq_len`` tokens)."""
    requests, skipped = [], 0
    for record in records:
        choices = tuple(tuple(tokenizer.encode(c, add_special_tokens=False).ids) for c in record.choices)
        if max(map(len, choices)) > seq_len:
            log.warning(
                "%s:%d: skipped: a choice is longer than the model's window of %d tokens",
                path,
                record.line,
                seq_len,
            )
            skipped += 1
            continue
        context = tuple(tokenizer.encode(record.context, add_special_tokens=False).ids) or (eos_id,)
        norms = tuple(max(1, len(c.removeprefix(DELIMITER))) for c in record.choices)
        requests.append(MCRequest(record.line, context, choices, norms, record.answer))
    return requests, skipped


@torch.no_grad()
def choice_log_likelihoods(
    model: Transformer, context: Sequence[int], choices: Sequence[Sequence[int]]
) -> list[float]:
    """Sum of log p(choice tokens | context) for each choice, in one batch; ``context`` is cut from
    the left so that every sequence fits the model's window. Every rank of a sharded model must call
    it alike (FSDP gathers the weights in forward)."""
    seq_len = model.args.seq_len
    rows = [(list(context) + list(choice))[-(seq_len + 1) :] for choice in choices]
    width = max(len(row) for row in rows) - 1
    device = next(model.parameters()).device
    inputs = torch.zeros(len(rows), width, dtype=torch.int64)  # right padding, never scored
    for r, row in enumerate(rows):
        inputs[r, : len(row) - 1] = torch.tensor(row[:-1])
    log_probs = torch.log_softmax(model(inputs.to(device)).float(), dim=-1).cpu()  # (choices, T, vocab)
    scores = []
    for r, (row, choice) in enumerate(zip(rows, choices)):
        positions = torch.arange(len(row) - 1 - len(choice), len(row) - 1)  # those that predict the choice
        scores.append(float(log_probs[r, positions, torch.tensor(choice)].sum()))
    return scores


def score_requests(model: Transformer, requests: list[MCRequest]) -> dict:
    """``{"records", "acc", "acc_norm", "log_likelihoods"}`` of ``requests`` (``log_likelihoods``: per
    request, per choice, for comparing with the harness item by item)."""
    correct = correct_norm = 0
    all_scores = []
    for request in requests:
        scores = choice_log_likelihoods(model, request.context, request.choices)
        per_char = [score / norm for score, norm in zip(scores, request.norms)]
        correct += argmax(scores) == request.answer
        correct_norm += argmax(per_char) == request.answer
        all_scores.append(scores)
    count = len(requests)
    return {
        "records": count,
        "acc": correct / count if count else 0.0,
        "acc_norm": correct_norm / count if count else 0.0,
        "log_likelihoods": all_scores,
    }


def argmax(values: list[float]) -> int:
    """The first index of the largest value (ties go to the earlier choice)."""
    return max(range(len(values)), key=values.__getitem__)
