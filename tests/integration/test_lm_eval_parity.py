"""Parity with lm-evaluation-harness 0.4.13: the harness on an exported checkpoint and ``lmpipe eval`` on
the checkpoint itself report the same per-choice log-likelihoods, acc, acc_norm and bits per byte, with
the task settings the README gives ("Parity with lm-evaluation-harness") and both tools' defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config.eval import EvalJobConfig
from pipeline.config.train import TrainJobConfig
from pipeline.eval.evaluate import evaluate
from pipeline.hf.export import export_hf
from pipeline.testing import make_tiny_corpus, require_module
from pipeline.train.pretrain import train

pytestmark = pytest.mark.slow

MC_TASK = """\
task: towns_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices | map('trim') | list}}}}"
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""
"""lmpipe's records as they are: each choice without its leading space, which is the delimiter."""

ROLLING_TASK = """\
task: towns_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""

HARNESS = """\
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager

model_dir, include, out = sys.argv[1:4]
results = lm_eval.simple_evaluate(
    model="hf",
    model_args=f"pretrained={model_dir},dtype=float32",
    tasks=["towns_mc", "towns_text"],
    task_manager=TaskManager(include_path=include),
    device="cpu",
    batch_size=4,
    log_samples=True,
)
samples = {
    task: [
        {"doc_id": s["doc_id"], "resps": [[float(r[0]) if isinstance(r, (list, tuple)) else float(r)
                                           for r in resp] for resp in s["resps"]]}
        for s in entries
    ]
    for task, entries in results["samples"].items()
}
json.dump({"results": results["results"], "samples": samples}, open(out, "w"), default=str)
"""

TOWNS = ["Branford", "Kelholt", "Morwick", "Stavmere", "Tullford", "Branmere", "Kelwick", "Morford"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny model pretrained on the tiny corpus (the unit tests' ``pretrained``)."""
    root = tmp_path_factory.mktemp("parity")
    shards, _ = make_tiny_corpus(root / "corpus")
    tiny = ["model.size=tiny", "model.seq_len=64", "train.global_batch_size=8", "train.micro_batch_size=4"]
    rest = ["train.warmup_steps=2", "train.eval_interval=0", "data.val_windows=8", "tracking.enabled=false"]
    out = root / "run"
    train(
        TrainJobConfig.load(
            None, [f"data.shards={shards}", f"output_dir={out}", *tiny, *rest, "train.max_steps=20"]
        )
    )
    return out


def write_data(root: Path) -> tuple[Path, Path]:
    """(the multiple-choice JSONL, the text JSONL): one empty context, texts longer than the window."""
    records = [
        {
            "context": f"{town} lies on the river",
            "choices": [" Amber.", " Grey.", " Lorn.", " Vell."],
            "answer": i % 4,
        }
        for i, town in enumerate(TOWNS)
    ]
    records += [
        {"context": f"The people of {town} make", "choices": [" wool", " glass", " cheese"], "answer": i % 3}
        for i, town in enumerate(TOWNS[:4])
    ]
    records.append({"context": "", "choices": [" Branford", " Kelholt lies"], "answer": 0})
    texts = [
        "Branford lies on the river Amber. ",
        " ".join(
            f"{town} is known for its wool. The people of {town} make glass by the Grey." for town in TOWNS
        ),
        "Kelholt  lies\non the river Lorn.\n\nMorwick is known for its cheese.",
    ]
    mc, text = root / "towns_mc.jsonl", root / "towns_text.jsonl"
    mc.write_text("".join(json.dumps(r) + "\n" for r in records))
    text.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return mc, text


def run_harness(export: Path, mc: Path, text: Path, root: Path) -> dict:
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "towns_mc.yaml").write_text(MC_TASK.format(data=mc))
    (tasks / "towns_text.yaml").write_text(ROLLING_TASK.format(data=text))
    out = root / "harness.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(root / "hf_home")}
    subprocess.run(
        [sys.executable, "-c", HARNESS, str(export), str(tasks), str(out)], env=env, check=True, timeout=300
    )
    return json.loads(out.read_text())


def test_harness_and_lmpipe_eval_agree(checkpoint, tmp_path):
    require_module("lm_eval")
    mc, text = write_data(tmp_path)
    harness = run_harness(export_hf(checkpoint, tmp_path / "hf"), mc, text, tmp_path)
    ours = evaluate(
        EvalJobConfig.load(
            None, [f"checkpoint={checkpoint}", f"mc={mc}", f"text={text}", "tracking.enabled=false"]
        )
    )

    theirs_ll = [s["resps"] for s in sorted(harness["samples"]["towns_mc"], key=lambda s: s["doc_id"])]
    assert len(theirs_ll) == len(ours["mc"]["log_likelihoods"])
    for item, (their_row, our_row) in enumerate(zip(theirs_ll, ours["mc"]["log_likelihoods"])):
        assert [r[0] for r in their_row] == pytest.approx(our_row, abs=1e-4), f"record {item}"
    scores = harness["results"]["towns_mc"]
    assert scores["acc,none"] == pytest.approx(ours["mc"]["acc"])
    assert scores["acc_norm,none"] == pytest.approx(ours["mc"]["acc_norm"])

    rolling = harness["results"]["towns_text"]
    assert ours["lm"]["bpb"] == pytest.approx(rolling["bits_per_byte,none"], abs=1e-5)
