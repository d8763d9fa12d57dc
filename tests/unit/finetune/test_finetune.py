"""Fine-tuning from a pretrained checkpoint: prompt/response JSONL, chat messages with packing, a saved
``datasets`` directory, and resuming (the data side alone is in test_sft_data.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config.finetune import FinetuneJobConfig
from pipeline.finetune.run import finetune
from pipeline.train.checkpoint import read_meta


def test_finetuning_lowers_the_response_loss(pretrained: Path, tiny_corpus, tmp_path):
    cfg = FinetuneJobConfig.load(
        None,
        [
            f"init_from={pretrained}",
            f"output_dir={tmp_path / 'sft'}",
            f"data.path={tiny_corpus[1]}",
            "data.val_fraction=0.1",
            "train.max_steps=12",
            "train.global_batch_size=8",
            "train.micro_batch_size=4",
            "train.warmup_steps=2",
            "train.lr=2e-3",
            "train.log_interval=4",
            "tracking.enabled=false",
        ],
    )
    result = finetune(cfg)
    assert result.final_val_loss < result.initial_val_loss * 0.7
    assert result.last_train_loss < result.first_train_loss
    saved = json.loads((tmp_path / "sft" / "result.json").read_text())
    assert saved["steps"] == 12 and saved["checkpoint"].endswith("step_12")
    meta = read_meta(saved["checkpoint"])
    assert meta["model"] == read_meta(pretrained / "checkpoints" / "step_40")["model"]
    assert (Path(saved["checkpoint"]) / "tokenizer.json").read_bytes() == (
        tiny_corpus[0] / "tokenizer.json"
    ).read_bytes()


def test_a_stopped_finetune_resumes_from_its_own_checkpoint(pretrained: Path, tiny_corpus, tmp_path, capsys):
    """SIGTERM after the first checkpoint, rerun: the job continues from its step (optimizer, schedule,
    loader) instead of starting over from init_from, and ends as the uninterrupted job."""
    import re

    from pipeline.testing import signal_after_first_checkpoint
    from pipeline.train.preemption import Preempted

    def config(name: str) -> FinetuneJobConfig:
        return FinetuneJobConfig.load(
            None,
            [
                f"init_from={pretrained}",
                f"output_dir={tmp_path / name}",
                f"data.path={tiny_corpus[1]}",
                "train.max_steps=8",
                "train.global_batch_size=8",
                "train.micro_batch_size=4",
                "train.warmup_steps=2",
                "train.log_interval=1",
                "checkpoint.interval=3",
                "tracking.enabled=false",
            ],
        )

    def losses(output: str) -> dict[int, str]:
        return {int(m[1]): m[2] for m in re.finditer(r"finetune step\s+(\d+)/\d+\s+(loss \S+)", output)}

    whole = finetune(config("whole"))
    whole_losses = losses(capsys.readouterr().out)
    cfg = config("stopped")
    watcher = signal_after_first_checkpoint(cfg.output_dir)
    with pytest.raises(Preempted) as stop:
        finetune(cfg)
    watcher.join()
    first = losses(capsys.readouterr().out)
    resumed = finetune(cfg)
    second = capsys.readouterr().out
    assert (
        f"finetune resuming from {tmp_path / 'stopped' / 'checkpoints' / f'step_{stop.value.step}'}" in second
    )
    assert sorted(losses(second)) == list(range(stop.value.step + 1, 9))
    assert {**first, **losses(second)} == whole_losses
    assert resumed.final_val_loss == whole.final_val_loss


def tiny_finetune(pretrained: Path, output_dir: Path, *overrides: str) -> FinetuneJobConfig:
    return FinetuneJobConfig.load(
        None,
        [
            f"init_from={pretrained}",
            f"output_dir={output_dir}",
            "train.max_steps=6",
            "train.global_batch_size=8",
            "train.micro_batch_size=4",
            "train.warmup_steps=2",
            "train.lr=2e-3",
            "train.log_interval=3",
            "tracking.enabled=false",
            *overrides,
        ],
    )


def test_finetune_on_packed_chat_messages_reports_what_it_skipped(
    pretrained: Path, tiny_corpus, tmp_path, capsys
):
    pairs = [json.loads(line) for line in tiny_corpus[1].read_text().splitlines()]
    chats = [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                *[
                    {"role": role, "content": pair[key]}
                    for pair in pairs[i : i + 2]
                    for role, key in (("user", "prompt"), ("assistant", "response"))
                ],
            ]
        }
        for i in range(0, len(pairs), 2)
    ]
    chats += [
        {"messages": [{"role": "user", "content": "Which river?"}]},  # bad: no assistant turn
        {
            "messages": [
                {"role": "user", "content": "Which river? " * 40},  # overlong: no response left
                {"role": "assistant", "content": "Lorn."},
            ]
        },
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(chat) + "\n" for chat in chats))
    result = finetune(
        tiny_finetune(
            pretrained, tmp_path / "sft", f"data.path={data}", "data.packing=true", "data.val_fraction=0.1"
        )
    )
    out = capsys.readouterr().out
    assert f"{data}:{len(chats) - 1}: the last turn is user, not assistant" in out
    assert (
        "1 dropped as longer than seq_len" in out and "1 bad records skipped" in out and "packed into" in out
    )
    assert result.steps == 6 and result.final_val_loss < result.initial_val_loss


def test_finetune_on_a_saved_datasets_directory_with_mapped_columns(
    pretrained: Path, tiny_corpus, tmp_path, capsys
):
    import datasets

    pairs = [json.loads(line) for line in tiny_corpus[1].read_text().splitlines()]
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"instruction": [p["prompt"] for p in pairs], "output": [p["response"] for p in pairs]}
            )
        }
    ).save_to_disk(str(tmp_path / "saved"))
    result = finetune(
        tiny_finetune(
            pretrained,
            tmp_path / "sft",
            f"data.path={tmp_path / 'saved'}",
            "data.columns.prompt=instruction",
            "data.columns.response=output",
            "train.max_steps=3",
        )
    )
    assert f"of {len(pairs)} records" in capsys.readouterr().out
    assert result.steps == 3 and result.final_val_loss < result.initial_val_loss
