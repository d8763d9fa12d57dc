"""``evaluate`` and ``generate`` on a pretrained checkpoint, in one process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.config.eval import EvalJobConfig, EvalTrackingConfig, GenerateJobConfig
from pipeline.eval.evaluate import evaluate
from pipeline.eval.generate import generate

NO_TRACKING = EvalTrackingConfig(enabled=False)


def test_evaluate_matches_the_training_validation(pretrained: Path, tiny_corpus):
    # Training validated on data.val_windows=8 windows per source; 2 batches of 4 are the same windows.
    out = evaluate(
        EvalJobConfig(
            checkpoint=str(pretrained),
            shards=str(tiny_corpus[0]),
            batch_size=4,
            max_batches=2,
            tracking=NO_TRACKING,
        )
    )["lm"]
    result = json.loads((pretrained / "result.json").read_text())
    assert out["loss"] == pytest.approx(result["final_val_loss"], rel=1e-5)
    sources = len(out["by_source"])
    assert sources >= 1 and out["tokens"] == sources * 8 * 64 and out["batches"] == sources * 2
    whole = evaluate(
        EvalJobConfig(checkpoint=str(pretrained), shards=str(tiny_corpus[0]), tracking=NO_TRACKING)
    )["lm"]
    assert whole["tokens"] > out["tokens"] and whole["ppl"] > 1


def test_evaluate_refuses_shards_of_another_tokenizer(pretrained: Path, tiny_corpus, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_corpus[0], shards)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError, match=r"tokenizer .*tokenizer.json differs from the one .*manifest.json was made with"
    ):
        evaluate(EvalJobConfig(checkpoint=str(pretrained), shards=str(shards), tracking=NO_TRACKING))


def test_generate(pretrained: Path, tmp_path):
    greedy = GenerateJobConfig(
        checkpoint=str(pretrained), prompt="Branford", max_new_tokens=12, temperature=0
    )
    text = generate(greedy)
    assert text.startswith("Branford") and len(text) > len("Branford") and text == generate(greedy)
    sampled = generate(GenerateJobConfig(checkpoint=str(pretrained), prompt="", max_new_tokens=8, seed=1))
    assert isinstance(sampled, str)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none")):
        generate(GenerateJobConfig(checkpoint=str(tmp_path / "none"), prompt=""))
