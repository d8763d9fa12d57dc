"""``lmpipe eval``: bits per byte, per-source weighting, raw text, held-out SFT loss, MLflow, multiple
choice."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.tokenizer.config import TokenizeConfig
from data_prep.tokenizer.tokenize import tokenize
from pipeline.cli.main import main
from pipeline.config.eval import EvalJobConfig
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.eval.evaluate import evaluate
from pipeline.finetune.run import finetune
from pipeline.train.checkpoint import load_tokenizer, read_meta, resolve_checkpoint
from pipeline.train.windows import TokenWindows


def run_eval(checkpoint: Path, *overrides: str, tracking: bool = False) -> dict:
    return evaluate(
        EvalJobConfig.load(
            None, [f"checkpoint={checkpoint}", *overrides, *([] if tracking else ["tracking.enabled=false"])]
        )
    )


@pytest.fixture(scope="module")
def texts(tiny_corpus) -> list[str]:
    """The tiny corpus's documents, in order."""
    return pq.read_table(tiny_corpus[0].parent / "docs" / "docs" / "00000-00000.parquet")["text"].to_pylist()


def make_shards(root: Path, docs: list[tuple[str, str]], tiny_corpus) -> Path:
    """Shards of ``(text, source)`` documents, all in the train split, made with the checkpoint's
    tokenizer."""
    (root / "docs" / "docs").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "id": [f"d{i}" for i in range(len(docs))],
                "text": [text for text, _ in docs],
                "source": [source for _, source in docs],
                "url": [""] * len(docs),
                "metadata": ["{}"] * len(docs),
            }
        ),
        root / "docs" / "docs" / "00000-00000.parquet",
    )
    tokenize(
        TokenizeConfig(
            input=[str(root / "docs")],
            tokenizer=str(tiny_corpus[0].parent / "tokenizer"),
            output=str(root / "shards"),
            val_fraction=0.0,
        )
    )
    return root / "shards"


@pytest.fixture(scope="module")
def finetuned(pretrained, tiny_corpus, tmp_path_factory):
    """(output dir, result) of a 2-step fine-tune that logged to MLflow in <output dir>/mlflow.db."""
    out = tmp_path_factory.mktemp("finetuned")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = finetune(
            FinetuneJobConfig.load(
                None,
                [
                    f"init_from={pretrained}",
                    f"output_dir={out}",
                    f"data.path={tiny_corpus[1]}",
                    "data.val_fraction=0.2",
                    "train.max_steps=2",
                    "train.global_batch_size=4",
                    "train.micro_batch_size=4",
                    "train.warmup_steps=1",
                    "train.eval_batches=100",
                    "train.log_interval=1",
                    "tracking.system_metrics=false",
                ],
            )
        )
    return out, result


def test_bits_per_byte_counts_the_bytes_of_the_scored_targets(pretrained, tiny_corpus):
    lm = run_eval(pretrained, f"shards={tiny_corpus[0]}")["lm"]
    # Independently: every val window's targets, decoded (EOS, a special token, decodes to nothing).
    tokenizer = load_tokenizer(tiny_corpus[0] / "tokenizer.json")
    windows = TokenWindows(tiny_corpus[0], "val", 64, source="wiki")
    targets = [windows.window(i)[1:].tolist() for i in range(len(windows))]
    tokens = sum(map(len, targets))
    text_bytes = sum(len(tokenizer.decode(row).encode("utf-8")) for row in targets)
    assert tokens > text_bytes / 10 and lm["tokens"] == tokens and lm["bytes"] == text_bytes
    assert lm["bpb"] == pytest.approx(lm["loss"] / math.log(2) * tokens / text_bytes, rel=1e-9)
    assert set(lm["by_source"]) == {"wiki"} and lm["by_source"]["wiki"]["bpb"] == pytest.approx(lm["bpb"])


def test_sources_weigh_by_their_tokens(pretrained, tiny_corpus, texts, tmp_path):
    scrambled = [
        " ".join(reversed(text.split())) for text in texts[40:50]
    ]  # unlike training text: a higher loss
    shards = make_shards(
        tmp_path, [(text, "wiki") for text in texts[:40]] + [(t, "cc") for t in scrambled], tiny_corpus
    )
    lm = run_eval(pretrained, f"shards={shards}", "split=train")["lm"]
    cc, wiki = lm["by_source"]["cc"], lm["by_source"]["wiki"]
    assert wiki["tokens"] > 2 * cc["tokens"] and cc["loss"] > wiki["loss"] + 0.5
    assert lm["tokens"] == cc["tokens"] + wiki["tokens"] and lm["bytes"] == cc["bytes"] + wiki["bytes"]
    weighted = (cc["loss"] * cc["tokens"] + wiki["loss"] * wiki["tokens"]) / lm["tokens"]
    assert lm["loss"] == pytest.approx(weighted, rel=1e-9)
    assert lm["loss"] < (cc["loss"] + wiki["loss"]) / 2 - 0.1  # not the plain mean of the sources
    assert lm["bpb"] == pytest.approx((cc["bpb"] * cc["bytes"] + wiki["bpb"] * wiki["bytes"]) / lm["bytes"])


def test_sft_loss_is_the_finetunes_validation_loss(finetuned, tiny_corpus):
    out, result = finetuned
    sft = run_eval(out, f"sft={tiny_corpus[1]}")[
        "sft"
    ]  # the fine-tune's own val_fraction, read off its config
    assert sft["val_fraction"] == 0.2 and sft["examples"] > 20
    assert sft["loss"] == pytest.approx(result.final_val_loss, rel=1e-5)
    assert sft["ppl"] == pytest.approx(math.exp(sft["loss"]))


def test_metrics_land_on_the_checkpoints_run_at_its_step(finetuned, tiny_corpus, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    out, _ = finetuned
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the store is found from the checkpoint, not the cwd
    meta = read_meta(resolve_checkpoint(out))
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    assert client.get_run(meta["mlflow_run_id"]).info.status == "FINISHED"
    results = run_eval(
        out,
        f"shards={tiny_corpus[0]}",
        "max_batches=1",
        "batch_size=2",
        f"mc={write_mc_task(tmp_path)}",
        tracking=True,
    )
    assert results["mlflow"]["run_id"] == meta["mlflow_run_id"] and not results["mlflow"]["new_run"]
    run = client.get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/val/loss")] == [
        (meta["step"], pytest.approx(results["lm"]["loss"]))
    ]
    assert run.data.metrics["eval/val/bpb/wiki"] == pytest.approx(results["lm"]["by_source"]["wiki"]["bpb"])
    assert run.data.metrics["eval/mc/task/acc"] == pytest.approx(results["mc"]["acc"])
    assert {"eval/val/ppl", "eval/val/loss/wiki", "eval/mc/task/acc_norm"} <= set(run.data.metrics)


def test_a_new_run_when_asked_or_when_the_checkpoint_has_none(finetuned, pretrained, tiny_corpus, tmp_path):
    from mlflow.tracking import MlflowClient

    out, _ = finetuned
    uri = f"sqlite:///{out}/mlflow.db"
    client = MlflowClient(uri)
    step_dir = resolve_checkpoint(out)
    meta = read_meta(step_dir)
    asked = run_eval(
        out, f"sft={tiny_corpus[1]}", "tracking.new_run=true", f"tracking.uri={uri}", tracking=True
    )
    run = client.get_run(asked["mlflow"]["run_id"])
    assert (
        asked["mlflow"]["new_run"]
        and run.info.run_id != meta["mlflow_run_id"]
        and run.info.status == "FINISHED"
    )
    assert run.info.experiment_id == client.get_experiment_by_name("eval").experiment_id
    assert (
        run.data.tags["checkpoint"] == str(step_dir)
        and run.data.tags["checkpoint_run_id"] == meta["mlflow_run_id"]
    )
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/sft/loss")] == [
        (meta["step"], pytest.approx(asked["sft"]["loss"]))
    ]
    assert read_meta(resolve_checkpoint(pretrained))["mlflow_run_id"] is None  # pretrained without tracking
    orphan = run_eval(pretrained, f"mc={write_mc_task(tmp_path)}", f"tracking.uri={uri}", tracking=True)
    run = client.get_run(orphan["mlflow"]["run_id"])
    assert run.data.tags["checkpoint"] == str(resolve_checkpoint(pretrained))
    assert run.data.tags["checkpoint_run_id"] == "" and run.info.status == "FINISHED"
    assert set(run.data.metrics) == {"eval/mc/task/acc", "eval/mc/task/acc_norm"}


def write_mc_task(root: Path, records: list[dict] | None = None, bad_lines: tuple[str, ...] = ()) -> Path:
    path = root / "task.jsonl"
    records = records or [
        {"context": "Branford lies on the river", "choices": [" Amber.", " Grey."], "answer": 0}
    ]
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in records) + "".join(line + "\n" for line in bad_lines)
    )
    return path


def test_cli_prints_a_table_and_writes_json(pretrained, tiny_corpus, texts, tmp_path, capsys):
    text = tmp_path / "sample.jsonl"
    text.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:10]))
    output = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(pretrained),
                "--text",
                str(text),
                "--mc",
                str(write_mc_task(tmp_path)),
                "--output",
                str(output),
                "tracking.enabled=false",
                "batch_size=4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "tokens" in printed and "bpb" in printed and "mc task: acc" in printed
    saved = json.loads(output.read_text())
    assert saved["lm"]["name"] == "sample" and saved["lm"]["bpb"] > 0 and saved["mc"]["records"] == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--shards", "{tmp}", "--text", "{tmp}/a.txt"],
            "give token shards (--shards) or raw text (--text), not both",
        ),
        ([], "give something to evaluate on"),
        (["--text", "{tmp}/a.csv"], "expected a .txt or .jsonl file"),
        (["--text", "{tmp}/missing.txt"], "text not found"),
        (["--shards", "{tmp}"], "no manifest.json in"),
        (["--mc", "{tmp}/missing.jsonl"], "multiple-choice task not found"),
        (["--mc", "{tmp}/empty.jsonl"], "no valid multiple-choice record"),
    ],
)
def test_bad_input_is_one_clear_line(pretrained, tmp_path, capsys, flags, message):
    (tmp_path / "empty.jsonl").write_text("\n")
    code = main(
        [
            "eval",
            "--checkpoint",
            str(pretrained),
            *(f.format(tmp=tmp_path) for f in flags),
            "tracking.enabled=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
