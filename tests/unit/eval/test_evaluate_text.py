"""``lmpipe eval --text``: every token of every document scored with maximal context, as
lm-evaluation-harness's rolling log-likelihood scores it; bits per byte, word and byte perplexity."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from data_prep.tokenizer.special import find_special_tokens
from pipeline.config.eval import EvalJobConfig
from pipeline.core.errors import ConfigError
from pipeline.eval.evaluate import evaluate
from pipeline.eval.rolling import rolling_loglikelihood, rolling_windows
from pipeline.train.checkpoint import load_model_for_inference, resolve_checkpoint


@pytest.fixture(scope="module")
def texts(tiny_corpus) -> list[str]:
    return pq.read_table(tiny_corpus[0].parent / "docs" / "docs" / "00000-00000.parquet")["text"].to_pylist()


@pytest.fixture(scope="module")
def loaded(pretrained):
    """(model, tokenizer, eos id) of the session's tiny checkpoint (seq_len 64)."""
    step_dir = resolve_checkpoint(pretrained)
    model, _, tokenizer = load_model_for_inference(step_dir)
    return model, tokenizer, find_special_tokens(tokenizer, step_dir / "tokenizer.json").eos_id


def text_eval(checkpoint: Path, path: Path, *overrides: str) -> dict:
    return evaluate(
        EvalJobConfig.load(
            None, [f"checkpoint={checkpoint}", f"text={path}", "tracking.enabled=false", *overrides]
        )
    )["lm"]


def sliding_loglikelihood(model, tokens: list[int], prefix: int) -> float:
    """Token by token, without windows: token i given the prefix and every token before it, or once
    that exceeds seq_len, exactly the seq_len tokens before it (the most context the model takes)."""
    total, seq_len = 0.0, model.args.seq_len
    with torch.no_grad():
        for i, token in enumerate(tokens):
            before = [prefix, *tokens[:i]] if i < seq_len else tokens[i - seq_len : i]
            logits = model(torch.tensor([before]))[0, -1]
            total += float(torch.log_softmax(logits.double(), dim=-1)[token])
    return total


def windowed_loglikelihood(model, tokens: list[int], prefix: int, stride: int) -> float:
    """One unpadded forward per scored token over its window's inputs up to it: what batching,
    padding and sorting must not change."""
    total = 0.0
    with torch.no_grad():
        for window in rolling_windows(tokens, prefix=prefix, seq_len=model.args.seq_len, stride=stride):
            offset = len(window.inputs) - len(window.targets)
            for j, target in enumerate(window.targets):
                logits = model(torch.tensor([window.inputs[: offset + j + 1]]))[0, -1]
                total += float(torch.log_softmax(logits.double(), dim=-1)[target])
    return total


def test_windows_score_every_token_once_with_maximal_context():
    tokens = list(range(100, 250))  # 150 tokens, seq_len 64: 3 windows
    windows = list(rolling_windows(tokens, prefix=0, seq_len=64, stride=64))
    assert len(windows) == 3
    assert [t for w in windows for t in w.targets] == tokens  # each exactly once, in order
    assert windows[0].inputs == [0, *tokens[:63]]
    last = windows[-1]  # 22 tokens left, predicted with the 64 tokens before the last of them
    assert len(last.inputs) == 64 and last.inputs[-1] == tokens[-2] and len(last.targets) == 22
    for window in windows[1:]:  # the position that scores a token holds the token just before it
        offset = len(window.inputs) - len(window.targets)
        assert [window.inputs[offset + j] + 1 for j in range(len(window.targets))] == window.targets
    assert [w.targets for w in rolling_windows(tokens[:5], prefix=0, seq_len=64, stride=64)] == [tokens[:5]]
    with pytest.raises(ConfigError, match="stride"):
        list(rolling_windows(tokens, prefix=0, seq_len=64, stride=65))


def test_a_stride_gives_every_prediction_at_least_seq_len_minus_stride_of_context():
    tokens = list(range(1, 301))
    windows = list(rolling_windows(tokens, prefix=0, seq_len=64, stride=16))
    assert [t for w in windows for t in w.targets] == tokens
    for window in windows[1:]:
        assert len(window.inputs) == 64 and window.inputs[-1] + 1 == window.targets[-1]
        context_of_first = len(window.inputs) - len(window.targets) + 1  # tokens it is predicted from
        assert context_of_first >= 64 - 16
        assert window.inputs == list(range(window.targets[-1] - 64, window.targets[-1]))  # contiguous


def test_numbers_equal_a_token_by_token_computation(loaded, texts):
    model, tokenizer, eos = loaded
    tokens = tokenizer.encode(" ".join(texts[:6]), add_special_tokens=False).ids[:150]  # 3 windows at 64
    assert len(tokens) == 150
    ll, scored = rolling_loglikelihood(model, [tokens], prefix=eos, batch_size=2)
    assert scored == 150
    assert ll == pytest.approx(windowed_loglikelihood(model, tokens, eos, stride=64), rel=1e-5)
    # Stride 1: every token past the first window sees the full seq_len before it, a sliding window.
    ll_1, _ = rolling_loglikelihood(model, [tokens], prefix=eos, stride=1, batch_size=16)
    assert ll_1 == pytest.approx(sliding_loglikelihood(model, tokens, eos), rel=1e-5)
    assert ll_1 != pytest.approx(ll, rel=1e-4)  # more context: another number


def test_short_and_long_documents_are_scored_whole_with_harness_metrics(pretrained, loaded, texts, tmp_path):
    model, tokenizer, eos = loaded
    short = "A short line."
    docs = [short, " ".join(texts[:8])]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in docs))
    lm = text_eval(pretrained, jsonl, "batch_size=3")
    ids = [tokenizer.encode(doc, add_special_tokens=False).ids for doc in docs]
    assert len(ids[0]) < 64 < len(ids[1])
    assert lm["tokens"] == sum(len(i) for i in ids)  # no tail dropped, nothing too short
    ll = sum(windowed_loglikelihood(model, i, eos, stride=64) for i in ids)
    words = sum(len(re.split(r"\s+", doc)) for doc in docs)
    text_bytes = sum(len(doc.encode("utf-8")) for doc in docs)
    assert lm["bytes"] == text_bytes and lm["words"] == words and lm["documents"] == 2
    assert lm["bpb"] == pytest.approx(-ll / text_bytes / math.log(2), rel=1e-5)
    assert lm["word_perplexity"] == pytest.approx(math.exp(-ll / words), rel=1e-5)
    assert lm["byte_perplexity"] == pytest.approx(math.exp(-ll / text_bytes), rel=1e-5)
    assert lm["loss"] == pytest.approx(-ll / lm["tokens"], rel=1e-5)
    txt = tmp_path / "short.txt"
    txt.write_text(short)
    assert text_eval(pretrained, txt)["tokens"] == len(ids[0])
