"""``lmpipe eval --mc``: scored as lm-evaluation-harness scores multiple choice (context alone, EOS only
for an empty context, ``acc_norm`` per character without the leading delimiter)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.config.eval import EvalJobConfig
from pipeline.eval.evaluate import evaluate
from pipeline.model.loss import IGNORE_INDEX
from pipeline.model.multiple_choice import MCRecord, tokenize_records
from pipeline.train.checkpoint import load_model_for_inference


def run_mc(checkpoint: Path, path: Path) -> dict:
    cfg = EvalJobConfig.load(None, [f"checkpoint={checkpoint}", f"mc={path}", "tracking.enabled=false"])
    return evaluate(cfg)["mc"]


def write_task(root: Path, records: list[dict], bad_lines: tuple[str, ...] = ()) -> Path:
    path = root / "task.jsonl"
    lines = [json.dumps(record) for record in records] + list(bad_lines)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_multiple_choice_follows_the_models_likelihoods(pretrained, tmp_path, caplog):
    model, _, tokenizer = load_model_for_inference(pretrained)
    eos = tokenizer.token_to_id("<|eos|>")
    assert eos is not None

    def log_likelihood(context: str, choice: str) -> float:  # through the fused loss, over the choice only
        prefix = tokenizer.encode(context, add_special_tokens=False).ids or [eos]
        tokens = torch.tensor([prefix + tokenizer.encode(choice, add_special_tokens=False).ids])
        targets = tokens[:, 1:].clone()
        targets[:, : len(prefix) - 1] = IGNORE_INDEX
        with torch.no_grad():
            return -float(model(tokens[:, :-1], targets, reduction="sum")[1])

    towns = ["Branford", "Kelholt", "Morwick", "Stavmere", "Tullford"]
    questions = [(f"{t} lies on the river", [" Amber.", " Grey.", " Lorn.", " Vell."]) for t in towns[:3]]
    questions += [(f"{t} is known for its", [" wool.", " glass.", " paper products."]) for t in towns[3:]]
    questions.append(("", [" Branford", " Kelholt lies"]))  # empty context: conditioned on EOS
    records, hits, norm_hits = [], 0, 0
    for i, (context, choices) in enumerate(questions):
        scores = [log_likelihood(context, choice) for choice in choices]
        best = max(range(len(choices)), key=scores.__getitem__)
        answer = best if i % 2 == 0 else (best + 1) % len(choices)  # right on half of them
        per_char = [score / len(choice.removeprefix(" ")) for score, choice in zip(scores, choices)]
        hits += answer == best
        norm_hits += answer == max(range(len(choices)), key=per_char.__getitem__)
        records.append({"context": context, "choices": choices, "answer": answer})
    bad = (
        '{"context": "x", "choices": [" a", " b"], "answer": 2}',
        "not json",
        '{"context": "x", "choices": [" a"], "answer": 0}',
        '{"choices": [" a", " b"], "answer": 0}',
    )
    path = write_task(tmp_path, records, bad)
    mc = run_mc(pretrained, path)
    assert (mc["records"], mc["skipped"]) == (6, 4)
    assert mc["acc"] == pytest.approx(hits / 6) and mc["acc"] == pytest.approx(0.5)
    assert mc["acc_norm"] == pytest.approx(norm_hits / 6)
    expected = [[log_likelihood(c, choice) for choice in choices] for c, choices in questions]
    assert mc["log_likelihoods"] == [pytest.approx(row, abs=1e-4) for row in expected]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert [message.split(": ")[0] for message in skipped] == [f"{path}:{line}" for line in (7, 8, 9, 10)]


def test_acc_norm_divides_by_the_choice_without_its_leading_space(pretrained):
    """The harness's acc_norm: log-likelihood / len(choice), the choice without ``target_delimiter``."""
    _, _, tokenizer = load_model_for_inference(pretrained)
    records = [MCRecord(1, "", (" wool", "glass", " paper products"), 0)]
    (request,), skipped = tokenize_records(records, tokenizer, eos_id=7, seq_len=64, path="task.jsonl")
    assert skipped == 0 and request.norms == (4, 5, 14)
    assert request.context == (7,)  # empty context: EOS, as the harness's prefix token
