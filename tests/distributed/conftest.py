"""What the multi-process tests share, built once per session: the tiny corpus, an MLflow store with its
tables made, and the uninterrupted 2-rank training runs the resume tests compare against.

Most of a short job's time is start-up, not steps: each rank imports torch (and DeepSpeed), and a job
that opens a fresh MLflow sqlite store first runs MLflow's schema migrations (seconds). So the jobs'
ranks are forked from a server that imported all that once (``pipeline.testing_jobs``; the SIGKILL test
kills a real ``lmpipe launch torchrun`` job); a store is migrated once and copied; a reference run that
two tests compare against (the DDP and FSDP ones: the world-size test and the SIGKILL test) is trained
once; and the next reference trains while a test resumes its copies (``TrainJobs``). What each test
proves is unchanged: it still compares its own resumed jobs with an uninterrupted run of its strategy.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.testing import make_tiny_corpus, require_module
from pipeline.testing_jobs import ForkedJob, run_job, start_job

LMPIPE = str(Path(sys.executable).with_name("lmpipe"))
STEPS, GLOBAL_BATCH, CHECKPOINT_INTERVAL = 10, 8, 4
"""One training shape for every resume test: checkpoints at steps 4, 8 and 10."""


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(shards_dir, sft_jsonl)."""
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def train_command(nproc: int, shards: Path, output: Path, uri: str, *options: str) -> list[str]:
    """``lmpipe train`` of the shared shape: one plain process for ``nproc`` 1, else a torchrun job.
    ``uri`` empty: tracking off."""
    launch = [] if nproc == 1 else ["launch", "torchrun", "--nproc-per-node", str(nproc), "--"]
    return [LMPIPE, *launch, *train_argv(shards, output, uri, *options)]


def train_argv(shards: Path, output: Path, uri: str, *options: str) -> list[str]:
    """The ``lmpipe`` arguments of a job of the shared shape (``train ...``)."""
    tracking = [f"tracking.uri={uri}"] if uri else ["tracking.enabled=false"]
    return [
        "train",
        f"data.shards={shards}",
        f"output_dir={output}",
        "model.seq_len=64",
        f"train.global_batch_size={GLOBAL_BATCH}",
        "train.micro_batch_size=2",
        f"train.max_steps={STEPS}",
        "train.warmup_steps=2",
        "train.log_interval=1",
        "train.eval_interval=0",
        "data.val_windows=8",
        f"checkpoint.interval={CHECKPOINT_INTERVAL}",
        "checkpoint.keep=3",
        *tracking,
        *options,
    ]


JOB_ENV = {"OMP_NUM_THREADS": "1"}
"""One thread per rank: the machine has few cores."""


@dataclass(frozen=True)
class Reference:
    """An uninterrupted 2-rank run of the shared shape, tracked in its own MLflow store."""

    output: Path
    stdout: str
    uri: str


class TrainJobs:
    """The resume tests' jobs: commands of the shared shape, fresh MLflow stores, and the reference runs.

    A reference is trained once per strategy, and the next one this session's tests will ask for is
    started in the background as soon as one is asked for: a job of 2 ranks keeps about one of the
    machine's 2 cores busy on average (imports, rank 0's own work, waits in collectives), so the
    background job runs in the gaps while a test resumes its copies."""

    steps, global_batch = STEPS, GLOBAL_BATCH

    def __init__(self, shards: Path, root: Path, planned: list[str]) -> None:
        """``planned``: the strategies whose references the collected tests ask for, in their order."""
        self.shards, self.root, self.planned = shards, root, planned
        self.template = root / "mlflow-empty.db"
        MlflowClient = require_module("mlflow.tracking").MlflowClient  # noqa: N806 (a class)
        MlflowClient(tracking_uri=f"sqlite:///{self.template}").search_experiments()  # migrates it
        self.started: dict[str, ForkedJob] = {}
        self.references: dict[str, Reference] = {}

    def command(self, nproc: int, output: Path, uri: str, *options: str) -> list[str]:
        """The job as a command line, for a test that kills it (launcher, torchrun and ranks)."""
        return train_command(nproc, self.shards, output, uri, *options)

    def run(self, nproc: int, output: Path, uri: str, *options: str) -> str:
        """Run the job on ``nproc`` ranks forked from the fork server (``pipeline.testing_jobs``); its
        output."""
        log = output.with_name(f"{output.name}.job.log")
        log.unlink(missing_ok=True)
        return run_job(train_argv(self.shards, output, uri, *options), nproc, log, JOB_ENV)

    def store(self, db_path: Path) -> str:
        """A fresh MLflow sqlite store at ``db_path`` (a copy of the one migrated once); its URI."""
        db_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.template, db_path)
        return f"sqlite:///{db_path}"

    def output(self, strategy: str) -> Path:
        return self.root / "reference" / strategy

    def start(self, strategy: str) -> None:
        if strategy in self.started:
            return
        output = self.output(strategy)
        uri = self.store(output.with_suffix(".db"))
        argv = train_argv(self.shards, output, uri, f"parallel.strategy={strategy}")
        self.started[strategy] = start_job(argv, 2, output.with_suffix(".log"), JOB_ENV)

    def reference(self, strategy: str) -> Reference:
        """The uninterrupted 2-rank run of ``strategy``; tests only read it (they resume copies)."""
        if strategy not in self.references:
            self.start(strategy)
            later = [name for name in self.planned if name not in self.started]
            if later:
                self.start(later[0])
            code = self.started[strategy].wait(300)
            output = self.output(strategy)
            stdout = output.with_suffix(".log").read_text()
            assert code == 0, stdout[-6000:]
            self.references[strategy] = Reference(output, stdout, f"sqlite:///{output.with_suffix('.db')}")
        return self.references[strategy]

    def stop(self) -> None:
        """Kill the background references no test asked for (a run stopped early, ``-x``)."""
        for job in self.started.values():
            job.kill()


@pytest.fixture(scope="session")
def train_jobs(tiny_corpus, tmp_path_factory, request) -> Iterator[TrainJobs]:
    planned: list[str] = []
    for item in request.session.items:
        strategy = getattr(item, "callspec", None) and item.callspec.params.get("strategy")
        if "train_jobs" in item.fixturenames and strategy and strategy not in planned:
            planned.append(strategy)
    # A '+' in the path: DeepSpeed's trap (convert_to_universal) is exercised by every resume.
    jobs = TrainJobs(tiny_corpus[0], tmp_path_factory.mktemp("runs+1"), planned)
    yield jobs
    jobs.stop()
