"""``lmpipe eval --mc``: multiple-choice accuracy of a checkpoint on a JSONL task file.

The scoring (what is conditioned on, how ``acc_norm`` normalises) is ``pipeline.model.multiple_choice``,
shared with pretraining's in-loop downstream eval; this module reads the file and reports. A malformed
record (bad JSON, a missing or mistyped field, an answer out of range, an empty choice, a choice longer
than the window) is skipped with a warning naming file:line, and counted; a file without one valid
record is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from pipeline.core.errors import InputError
from pipeline.model.multiple_choice import read_mc_records, score_requests, tokenize_records
from pipeline.model.transformer import Transformer


def evaluate_mc(model: Transformer, tokenizer: Tokenizer, path: str | Path, *, eos_id: int) -> dict[str, Any]:
    """``{"task", "path", "records", "skipped", "acc", "acc_norm", "log_likelihoods"}`` of the task file
    at ``path``; ``eos_id`` starts a record whose context is empty."""
    path = Path(path)
    records, skipped = read_mc_records(path)
    requests, too_long = tokenize_records(
        records, tokenizer, eos_id=eos_id, seq_len=model.args.seq_len, path=path
    )
    skipped += too_long
    if not requests:
        raise InputError(
            f"{path}: no valid multiple-choice record ({skipped} skipped); expected JSONL of "
            '{"context": str, "choices": [str, ...], "answer": int}'
        )
    scores = score_requests(model, requests)
    return {"task": path.stem, "path": str(path), "skipped": skipped, **scores}
