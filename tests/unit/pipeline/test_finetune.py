"""SFT data (formatting, loss mask, split, sharding) and fine-tuning from a pretrained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.checkpoint import load_tokenizer, read_meta
from pipeline.finetune import finetune
from pipeline.job_config import FinetuneJobConfig
from pipeline.model import IGNORE_INDEX
from pipeline.sft_data import ChatTokens, SFTDataset, SFTLoader, encode_example, read_records


@pytest.fixture(scope="module")
def tokenizer(tiny_corpus):
    return load_tokenizer(tiny_corpus[0] / "tokenizer.json")


def test_loss_mask_covers_only_the_response_and_eos(tokenizer):
    chat = ChatTokens.of(tokenizer, "tok")
    prompt_ids = tokenizer.encode("Which river is Branford on?").ids
    response_ids = tokenizer.encode("The river Lorn.").ids
    inputs, targets = encode_example(tokenizer, chat, "Which river is Branford on?", "The river Lorn.", seq_len=40)
    sequence = [chat.user, *prompt_ids, chat.assistant, *response_ids, chat.eos]
    assert len(inputs) == len(targets) == 40
    assert inputs[:len(sequence) - 1] == sequence[:-1]
    assert inputs[len(sequence) - 1:] == [chat.pad] * (41 - len(sequence))
    learned = [t for t in targets if t != IGNORE_INDEX]
    assert learned == [*response_ids, chat.eos]
    # the target of the <|assistant|> position is the first response token; everything before is ignored
    first = len(prompt_ids) + 1
    assert targets[:first] == [IGNORE_INDEX] * first and targets[first] == response_ids[0]


def test_truncation_keeps_what_fits_and_drops_promptonly_rows(tokenizer):
    chat = ChatTokens.of(tokenizer, "tok")
    inputs, targets = encode_example(tokenizer, chat, "Which river?", "The river Lorn. " * 10, seq_len=16)
    assert len(inputs) == 16 and chat.eos not in targets and targets[-1] != IGNORE_INDEX
    assert encode_example(tokenizer, chat, "Which river is it? " * 10, "Lorn.", seq_len=16) is None


def test_split_is_stable_and_disjoint(tiny_corpus, tokenizer):
    train = SFTDataset(tiny_corpus[1], tokenizer, seq_len=64, split="train", val_fraction=0.2)
    val = SFTDataset(tiny_corpus[1], tokenizer, seq_len=64, split="val", val_fraction=0.2)
    assert len(train) + len(val) == len(read_records(tiny_corpus[1])) and 0 < len(val) < len(train)
    train_rows = {tuple(row.tolist()) for row in train.inputs}
    assert not train_rows & {tuple(row.tolist()) for row in val.inputs}  # duplicates stay on one side


def test_loader_gives_each_rank_its_own_samples(tiny_corpus, tokenizer):
    data = SFTDataset(tiny_corpus[1], tokenizer, seq_len=64, split="train", val_fraction=0.0)
    single = next(iter(SFTLoader(data, batch_size=4, seed=3)))[0]
    ranks = [next(iter(SFTLoader(data, batch_size=2, rank=r, world_size=2, seed=3)))[0] for r in (0, 1)]
    assert sorted(map(tuple, single.tolist())) == sorted(map(tuple, ranks[0].tolist() + ranks[1].tolist()))


def test_bad_records_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=f"{path}:2: expected"):
        read_records(path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_records(tmp_path / "missing.jsonl")


def test_finetuning_lowers_the_response_loss(pretrained: Path, tiny_corpus, tmp_path):
    cfg = FinetuneJobConfig.load(None, [f"init_from={pretrained}", f"output_dir={tmp_path / 'sft'}",
                                        f"data.path={tiny_corpus[1]}", "data.val_fraction=0.1",
                                        "train.max_steps=12", "train.global_batch_size=8",
                                        "train.micro_batch_size=4", "train.warmup_steps=2", "train.lr=2e-3",
                                        "train.log_interval=4", "tracking.enabled=false"])
    result = finetune(cfg)
    assert result.final_val_loss < result.initial_val_loss * 0.7
    assert result.last_train_loss < result.first_train_loss
    saved = json.loads((tmp_path / "sft" / "result.json").read_text())
    assert saved["steps"] == 12 and saved["checkpoint"].endswith("step_12")
    meta = read_meta(saved["checkpoint"])
    assert meta["model"] == read_meta(pretrained / "checkpoints" / "step_40")["model"]
    assert (Path(saved["checkpoint"]) / "tokenizer.json").read_bytes() == (
        tiny_corpus[0] / "tokenizer.json").read_bytes()


def test_a_stopped_finetune_resumes_from_its_own_checkpoint(pretrained: Path, tiny_corpus, tmp_path, capsys):
    """SIGTERM after the first checkpoint, rerun: the job continues from its step (optimizer, schedule,
    loader) instead of starting over from init_from, and ends as the uninterrupted job."""
    import re

    from pipeline.preemption import Preempted
    from pipeline.testing import signal_after_first_checkpoint

    def config(name: str) -> FinetuneJobConfig:
        return FinetuneJobConfig.load(None, [f"init_from={pretrained}", f"output_dir={tmp_path / name}",
                                             f"data.path={tiny_corpus[1]}", "train.max_steps=8",
                                             "train.global_batch_size=8", "train.micro_batch_size=4",
                                             "train.warmup_steps=2", "train.log_interval=1",
                                             "checkpoint.interval=3", "tracking.enabled=false"])

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
    assert f"finetune resuming from {tmp_path / 'stopped' / 'checkpoints' / f'step_{stop.value.step}'}" in second
    assert sorted(losses(second)) == list(range(stop.value.step + 1, 9))
    assert {**first, **losses(second)} == whole_losses
    assert resumed.final_val_loss == whole.final_val_loss
