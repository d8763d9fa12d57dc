"""Cost of MLflow tracking (and of the loader) to a training step: a tiny training with tracking on vs off.

The same job (size tiny, seq_len 128, batch 8, fp32 on CPU) runs with ``tracking.enabled`` true
(a sqlite store in the run dir) and false, interleaved, median of 3 rounds. Logged every step
(``--log-interval 1``, the worst case; the default 10 divides the cost by 10), with the memory
metrics the loop adds per log. Two measures, since on a shared CPU the loop's wall time drifts by
more than the 1% target:
  - loop wall time (``run_loop``: steps, logs, final validation and checkpoint), on vs off;
  - the time the training thread itself spends in ``Tracker.log_metrics`` + ``memory_metrics``
    and in fetching batches (``next`` on the loader), as a share of the step time (train_step).
Run start (sqlite schema, params, tags) and finish happen once per job and are not per step.

Run: ``python bench/bench_tracking.py [--steps 40] [--log-interval 1]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.config.train import TrainJobConfig
from pipeline.testing import make_tiny_corpus
from pipeline.train import job as job_module
from pipeline.train import pretrain as train_module
from pipeline.train.tracking import Tracker, memory_metrics

TIMES: dict[str, float] = {}


def timed_run_loop(original: Any) -> Any:
    """``run_loop`` that records its wall time and the time spent fetching batches."""

    def run_loop(run: Any, hooks: Any, **kwargs: Any) -> Any:
        def timed(source: Iterator) -> Iterator:
            while True:
                began = time.perf_counter()
                try:
                    batch = next(source)
                finally:
                    TIMES["loader"] += time.perf_counter() - began
                yield batch

        began = time.perf_counter()
        run.batches = timed(run.batches)
        result = original(run, hooks, **kwargs)
        TIMES["loop"] = time.perf_counter() - began
        TIMES["steps"] = result.tokens_seen / result.tokens_per_s if result.tokens_per_s else 0.0
        return result

    return run_loop


def timed_log_metrics(original: Any) -> Any:
    """``Tracker.log_metrics`` plus the memory metrics the loop adds, timed on the calling thread."""

    def log_metrics(self: Tracker, metrics: dict[str, float], step: int) -> None:
        began = time.perf_counter()
        if self.run_id is not None:
            metrics = {**metrics, **memory_metrics(torch.device("cpu"))}
        original(self, metrics, step)
        TIMES["logging"] += time.perf_counter() - began
        TIMES["logs"] += 1

    return log_metrics


def run(shards: Path, out: Path, *, tracking: bool, steps: int, log_interval: int) -> dict[str, float]:
    TIMES.update(loader=0.0, logging=0.0, logs=0)
    cfg = TrainJobConfig.load(
        None,
        [
            f"data.shards={shards}",
            f"output_dir={out}",
            "model.size=tiny",
            "model.seq_len=128",
            "train.global_batch_size=8",
            "train.micro_batch_size=8",
            "train.warmup_steps=2",
            f"train.max_steps={steps}",
            f"train.log_interval={log_interval}",
            "train.eval_interval=0",
            "data.val_windows=8",
            f"tracking.enabled={str(tracking).lower()}",
            "checkpoint.resume=never",
        ],
    )
    with contextlib.redirect_stdout(io.StringIO()):
        train_module.train(cfg)
    return dict(TIMES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-interval", type=int, default=1)
    options = parser.parse_args()
    torch.set_num_threads(1)
    job_module.run_loop = timed_run_loop(job_module.run_loop)
    Tracker.log_metrics = timed_log_metrics(Tracker.log_metrics)
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        shards, _ = make_tiny_corpus(Path(tmp) / "corpus")
        results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for round_ in range(4):  # round 0 warms up (imports, page cache) and is dropped
            for tracking in (False, True):
                times = run(
                    shards,
                    Path(tmp) / f"run-{round_}-{tracking}",
                    tracking=tracking,
                    steps=options.steps,
                    log_interval=options.log_interval,
                )
                if round_:
                    results[tracking].append(times)

    def median(tracking: bool, key: str) -> float:
        return statistics.median(t[key] for t in results[tracking])

    logs = median(True, "logs")  # train logs and the two validations
    print(
        f"{options.steps} steps, a log every {options.log_interval} step(s) "
        f"({logs:.0f} log calls), median of 3"
    )
    for key, what in (("loop", "loop wall time"), ("steps", "train_step total")):
        off, on = median(False, key), median(True, key)
        print(f"{what:<17} off {off:.3f} s   on {on:.3f} s   ratio on/off {on / off:.4f}")
    print(f"step time         {median(True, 'steps') / options.steps * 1e3:.2f} ms (tracking on)")
    logging_share = median(True, "logging") / median(True, "steps")
    print(
        f"logging (training thread)  {median(True, 'logging') / logs * 1e6:.0f} us per log   "
        f"{logging_share:.3%} of step time"
    )
    loader_share = median(True, "loader") / median(True, "steps")
    print(
        f"loader (next batch)        {median(True, 'loader') / options.steps * 1e6:.0f} us per step   "
        f"{loader_share:.3%} of step time"
    )


if __name__ == "__main__":
    main()
