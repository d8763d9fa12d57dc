"""In-loop downstream eval: ``train.eval_tasks`` scored during pretraining, equal to ``lmpipe eval --mc``
on the checkpoint of the same step, under one process and under DDP/FSDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config.eval import EvalJobConfig
from pipeline.config.train import TrainJobConfig
from pipeline.core.errors import ConfigError
from pipeline.eval.evaluate import evaluate
from pipeline.testing import run_distributed_test
from pipeline.train.downstream import DownstreamEvalHook
from pipeline.train.loop import TrainRun
from pipeline.train.pretrain import train

RECORDS = [
    {
        "context": f"{town} lies on the river",
        "choices": [" Amber.", " Grey.", " Lorn.", " Vell."],
        "answer": i % 4,
    }
    for i, town in enumerate(["Branford", "Kelholt", "Morwick", "Stavmere", "Tullford", "Branmere"])
] + [
    {"context": f"{town} is known for its", "choices": [" wool.", " glass.", " cheese."], "answer": i % 3}
    for i, town in enumerate(["Kelford", "Morholt", "Stavwick", "Tullmere"])
]


def write_task(path: Path) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return path


def mc_of_checkpoint(step_dir: Path, task: Path) -> dict:
    cfg = EvalJobConfig.load(None, [f"checkpoint={step_dir}", f"mc={task}", "tracking.enabled=false"])
    return evaluate(cfg)["mc"]


@pytest.mark.slow
def test_pretraining_logs_downstream_accuracy_equal_to_eval_of_its_checkpoints(train_config, tmp_path):
    from mlflow.tracking import MlflowClient

    task = write_task(tmp_path / "towns.jsonl")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = train_config(
        "train.max_steps=8",
        "train.eval_interval=4",
        "checkpoint.interval=4",
        f"train.eval_tasks=[{task}]",
        "tracking.enabled=true",
        f"tracking.uri={uri}",
    )
    run_id = train(cfg).mlflow_run_id
    assert run_id is not None
    client = MlflowClient(tracking_uri=uri)
    for metric in ("acc", "acc_norm"):
        history = client.get_metric_history(run_id, f"downstream/towns/{metric}")
        assert [m.step for m in history] == [4, 8]
        for entry in history:
            assert 0.0 <= entry.value <= 1.0
            expected = mc_of_checkpoint(Path(cfg.output_dir) / "checkpoints" / f"step_{entry.step}", task)
            assert entry.value == pytest.approx(expected[metric])


def test_eval_task_names_must_differ(train_config, tmp_path):
    with pytest.raises(ConfigError, match="eval_tasks"):
        train_config(f"train.eval_tasks=[{tmp_path}/a/task.jsonl, {tmp_path}/b/task.jsonl]")


def _distributed_run(strategy: str, shards: str, output_dir: str, task: str) -> dict[str, dict]:
    """One rank of a tiny pretraining run with eval_tasks: the scores its hook computed at the end, and
    ``lmpipe eval --mc``'s on the final checkpoint."""
    computed = []
    score = DownstreamEvalHook.evaluate

    def recording(self: DownstreamEvalHook, run: TrainRun, step: int) -> dict[str, float]:
        computed.append(score(self, run, step))
        return computed[-1]

    DownstreamEvalHook.evaluate = recording  # type: ignore[method-assign]  # this spawned worker only
    cfg = TrainJobConfig.load(
        None,
        [
            f"data.shards={shards}",
            f"output_dir={output_dir}",
            "model.size=tiny",
            "model.seq_len=64",
            "train.global_batch_size=8",
            "train.micro_batch_size=4",
            "train.warmup_steps=2",
            "train.max_steps=2",
            "train.eval_interval=0",
            "data.val_windows=8",
            "tracking.enabled=false",
            f"parallel.strategy={strategy}",
            f"train.eval_tasks=[{task}]",
        ],
    )
    train(cfg)
    return {
        "hook": computed[-1],
        "eval": mc_of_checkpoint(Path(output_dir) / "checkpoints" / "step_2", Path(task)),
    }


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_downstream_eval_runs_on_every_rank_of_a_sharded_model(strategy, tiny_corpus, tmp_path):
    task = write_task(tmp_path / "towns.jsonl")
    ranks = run_distributed_test(
        _distributed_run,
        world_size=2,
        timeout_s=300,
        strategy=strategy,
        shards=str(tiny_corpus[0]),
        output_dir=str(tmp_path / "run"),
        task=str(task),
    )
    for rank in ranks:
        assert rank["hook"] == {
            "downstream/towns/acc": pytest.approx(rank["eval"]["acc"]),
            "downstream/towns/acc_norm": pytest.approx(rank["eval"]["acc_norm"]),
        }
