"""In-loop downstream evaluation (OLMo-core's downstream evaluator callback): multiple-choice accuracy
on ``train.eval_tasks`` every ``train.eval_interval`` steps and after the last, logged as
``downstream/<task>/acc`` and ``downstream/<task>/acc_norm``, so runs of a sweep compare on accuracy,
not only on loss.

Scoring is ``pipeline.model.multiple_choice``, the same code ``lmpipe eval --mc`` runs, so the numbers
at a step equal the eval verb's on that step's checkpoint (up to the precision the loop runs in). Every
rank scores every record: a sharded model (FSDP, ZeRO-3) gathers its weights in forward, which only
works when all ranks run the same forwards; the tasks are small, so the duplicated work is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from tokenizers import Tokenizer

from data_prep.tokenizer.special import find_special_tokens
from pipeline.core.errors import InputError
from pipeline.model.multiple_choice import MCRequest, read_mc_records, score_requests, tokenize_records
from pipeline.train.loop import Hook, LoopState, TrainRun


class _WithTokenizer(Protocol):
    tokenizer_file: Path


def task_name(path: str | Path) -> str:
    """A task's name in metric keys: its file's stem."""
    return Path(path).stem


def load_tasks(paths: list[str], *, tokenizer_file: Path, seq_len: int) -> dict[str, list[MCRequest]]:
    """Each task file's records, read and tokenized once at the start of the job (a file without one
    valid record is an error then, not after hours of training)."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    eos_id = find_special_tokens(tokenizer, tokenizer_file).eos_id
    tasks = {}
    for path in paths:
        records, _ = read_mc_records(path)
        requests, _ = tokenize_records(records, tokenizer, eos_id=eos_id, seq_len=seq_len, path=path)
        if not requests:
            raise InputError(f"{path}: no valid multiple-choice record (train.eval_tasks)")
        tasks[task_name(path)] = requests
    return tasks


class DownstreamEvalHook(Hook):
    """acc and acc_norm of each task every ``interval`` steps (0: only at the end) and after the last."""

    def __init__(self, tasks: dict[str, list[MCRequest]], interval: int):
        self.tasks, self.interval = tasks, interval

    @classmethod
    def for_run(cls, run: TrainRun) -> DownstreamEvalHook:
        """The hook of ``run.loop.eval_tasks``, tokenized with the tokenizer the run's checkpoints carry."""
        checkpointer: _WithTokenizer = run.checkpointer  # type: ignore[assignment]
        tasks = load_tasks(
            run.loop.eval_tasks,
            tokenizer_file=checkpointer.tokenizer_file,
            seq_len=run.parallel.model.args.seq_len,
        )
        return cls(tasks, run.loop.eval_interval)

    def on_step(self, run: TrainRun, state: LoopState) -> None:
        if self.interval and state.step % self.interval == 0 and state.step != run.total_steps:
            self.evaluate(run, state.step)

    def on_end(self, run: TrainRun, state: LoopState) -> None:
        self.evaluate(run, run.total_steps)

    @torch.no_grad()
    def evaluate(self, run: TrainRun, step: int) -> dict[str, float]:
        """Score every task on every rank (see the module docstring); log and print them; return them."""
        metrics = {}
        model = run.parallel.model
        training = model.training
        model.eval()  # LoRA dropout off, as in ``lmpipe eval``
        try:
            with run.parallel.autocast():
                for name, requests in self.tasks.items():
                    scores = score_requests(model, requests)
                    metrics[f"downstream/{name}/acc"] = scores["acc"]
                    metrics[f"downstream/{name}/acc_norm"] = scores["acc_norm"]
        finally:
            model.train(training)
        run.tracker.log_metrics(metrics, step=step)
        run.say(
            f"step {step:>5}/{run.total_steps}  downstream "
            + "  ".join(f"{key.removeprefix('downstream/')} {value:.4f}" for key, value in metrics.items())
        )
        return metrics
