"""Per-document rolling log-likelihood of raw text, as lm-evaluation-harness's ``loglikelihood_rolling``
scores perplexity tasks, so ``lmpipe eval --text`` and the harness report the same numbers.

Every token of every document is predicted exactly once; the first token is conditioned on a prefix
token alone (EOS, which training puts before every document and the export names as BOS). The first
window holds the prefix and the document's first ``seq_len - 1`` tokens; each later window predicts the
next ``stride`` tokens (fewer at the end) given the ``seq_len`` tokens before the last of them, so every
prediction sees at least ``seq_len - stride`` tokens of the document before it and the last window of
a document sees as much as fits. ``stride = seq_len`` is the harness's default (disjoint predictions,
fewest forward passes); a smaller stride buys more context per prediction with more passes.
Documents never share a window: no document is conditioned on another.

Totals follow the harness's definitions over the whole file (each a sum over documents):
``word_perplexity = exp(-ll / words)`` with words counted as ``re.split(r"\\s+", doc)`` does,
``byte_perplexity = exp(-ll / bytes)`` and ``bits_per_byte = -ll / (bytes * ln 2)`` over every
UTF-8 byte of each document.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch

from pipeline.core.errors import ConfigError
from pipeline.model.loss import IGNORE_INDEX
from pipeline.model.transformer import Transformer


class Window(NamedTuple):
    """One forward pass: ``inputs`` (up to seq_len tokens) and the last ``len(targets)`` of its
    positions' next tokens, the ones this window scores."""

    inputs: list[int]
    targets: list[int]


def rolling_windows(tokens: Sequence[int], *, prefix: int, seq_len: int, stride: int) -> Iterator[Window]:
    """The windows that score each of ``tokens`` once, with maximal context (see the module doc)."""
    if not 0 < stride <= seq_len:
        raise ConfigError(f"stride must be in [1, seq_len = {seq_len}], got {stride}")
    tokens = list(tokens)
    first = min(seq_len, len(tokens))
    if first == 0:
        return
    yield Window([prefix, *tokens[: first - 1]], tokens[:first])
    predicted = first
    while predicted < len(tokens):
        end = min(len(tokens), predicted + stride)
        yield Window(tokens[max(0, end - 1 - seq_len) : end - 1], tokens[predicted:end])
        predicted = end


def _padded_batch(windows: list[Window]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs right-padded with 0 (causal attention: padding after a position never reaches it) and
    targets IGNORE_INDEX everywhere but the positions a window scores."""
    width = max(len(window.inputs) for window in windows)
    inputs = torch.zeros(len(windows), width, dtype=torch.int64)
    targets = torch.full((len(windows), width), IGNORE_INDEX, dtype=torch.int64)
    for row, window in enumerate(windows):
        n, k = len(window.inputs), len(window.targets)
        inputs[row, :n] = torch.tensor(window.inputs)
        targets[row, n - k : n] = torch.tensor(window.targets)
    return inputs, targets


@torch.no_grad()
def rolling_loglikelihood(
    model: Transformer,
    documents: Sequence[Sequence[int]],
    *,
    prefix: int,
    stride: int | None = None,
    batch_size: int = 8,
) -> tuple[float, int]:
    """(sum of the log-likelihoods of every token of ``documents``, tokens scored)."""
    seq_len = model.args.seq_len
    device = model.tok_embeddings.weight.device
    windows = [
        window
        for tokens in documents
        for window in rolling_windows(tokens, prefix=prefix, seq_len=seq_len, stride=stride or seq_len)
    ]
    windows.sort(key=lambda window: len(window.inputs))  # similar widths share a batch: less padding
    loglikelihood, scored = 0.0, 0
    for start in range(0, len(windows), batch_size):
        inputs, targets = _padded_batch(windows[start : start + batch_size])
        loss_sum = model(inputs.to(device), targets.to(device), reduction="sum")[1]
        loglikelihood -= float(loss_sum)
        scored += int((targets != IGNORE_INDEX).sum())
    return loglikelihood, scored


def text_metrics(loglikelihood: float, tokens: int, documents: Sequence[str]) -> dict[str, Any]:
    """Loss and perplexity per token, and the harness's word perplexity, byte perplexity and bits per
    byte, of ``documents`` whose tokens sum to ``loglikelihood``."""
    words = sum(len(re.split(r"\s+", doc)) for doc in documents)
    text_bytes = sum(len(doc.encode("utf-8")) for doc in documents)
    loss = -loglikelihood / tokens
    return {
        "loss": loss,
        "ppl": math.exp(loss),
        "bpb": -loglikelihood / (text_bytes * math.log(2)),
        "word_perplexity": math.exp(-loglikelihood / words),
        "byte_perplexity": math.exp(-loglikelihood / text_bytes),
        "tokens": tokens,
        "bytes": text_bytes,
        "words": words,
        "documents": len(documents),
    }
