"""``lmpipe launch slurm`` submitted to the real local Slurm: the rendered script trains as a local
torchrun run does, survives a preemption (USR2 -> checkpoint -> requeue -> resume),
runs a job array of configs, runs DeepSpeed's launcher in place of torchrun, and ends (FAILED, cause
in the log) when one rank dies.

One node here, so the multi-node shape is two torchrun tasks on the node (``tasks_per_node=2``),
one rank each, meeting by c10d rendezvous at the node's host name as separate nodes would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launch.slurm.state import JobState, job_states
from pipeline.testing import make_tiny_corpus
from pipeline.testing_jobs import ForkedJob, start_job
from pipeline.train.checkpoint import newest_checkpoint

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LMPIPE = str(Path(sys.executable).with_name("lmpipe"))
PROFILE = str(REPO / "configs" / "slurm" / "local.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = 60
TWO_TASKS = ("--set", "tasks_per_node=2", "--set", "procs_per_node=1", "--set", "cpus_per_task=1")
"""Two torchrun "nodes" of one rank each on the one node (each task gets one of its two cores)."""
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def train_args(shards: Path, *overrides: str) -> list[str]:
    return [
        "train",
        f"data.shards={shards}",
        "model.seq_len=64",
        "train.global_batch_size=8",
        "train.micro_batch_size=2",
        f"train.max_steps={STEPS}",
        "train.warmup_steps=2",
        "train.log_interval=1",
        "train.eval_interval=0",
        "data.val_windows=8",
        "checkpoint.interval=5",
        "checkpoint.keep=2",
        "checkpoint.resume=auto",
        *overrides,
    ]


def step_losses(log: str) -> dict[int, float]:
    """Step -> loss; a step printed twice (a rerun after a requeue) keeps its last value."""
    return {
        int(m.group(1)): float(m.group(2)) for m in re.finditer(r"train step\s+(\d+)/\d+\s+loss (\S+)", log)
    }


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))[0]


Reference = tuple[dict[int, float], dict]
"""Per-step losses and result.json of an uninterrupted run."""


class BackgroundReference:
    """The same training (ddp) on 2 local ranks (forked, ``pipeline.testing_jobs``: the Slurm jobs are the
    torchrun runs here), started in the background when a test first asks (``start``): it trains while the
    Slurm job's time goes to scheduling and to the requeue's wait. A resumed job equals it exactly."""

    def __init__(self, shards: Path, root: Path) -> None:
        self.shards, self.output = shards, root / "ddp"
        self.job: ForkedJob | None = None
        self.finished: Reference | None = None

    def start(self) -> None:
        if self.job is None:
            verb = train_args(self.shards, f"output_dir={self.output}", "tracking.enabled=false")
            self.job = start_job(verb, 2, self.output.with_suffix(".log"), {"OMP_NUM_THREADS": "1"})

    def get(self) -> Reference:
        if self.finished is None:
            self.start()
            assert self.job is not None
            code = self.job.wait(240)
            log = self.output.with_suffix(".log").read_text()
            assert code == 0, log[-4000:]
            losses = step_losses(log)
            assert sorted(losses) == list(range(1, STEPS + 1))
            self.finished = losses, json.loads((self.output / "result.json").read_text())
        return self.finished

    def stop(self) -> None:
        """Kill the run if no test waited for it (a test that failed first)."""
        if self.job is not None:
            self.job.kill()


@pytest.fixture(scope="module")
def background_reference(shards, tmp_path_factory) -> Iterator[BackgroundReference]:
    run = BackgroundReference(shards, tmp_path_factory.mktemp("reference"))
    yield run
    run.stop()


@pytest.fixture(scope="module")
def reference(background_reference) -> Reference:
    return background_reference.get()


def all_ended(states: list[JobState]) -> bool:
    return bool(states) and all(state.state in ENDED for state in states)


class Job:
    """One ``lmpipe launch slurm`` submission; cancelled at the end of the test if it still runs."""

    def __init__(self, tmp_path: Path, verb: list[str], *options: str, name: str = "lmpipe-test"):
        self.logs = tmp_path / "logs"
        proc = subprocess.run(
            [
                LMPIPE,
                "launch",
                "slurm",
                "--profile",
                PROFILE,
                "--set",
                f"log_dir={self.logs}",
                "--job-name",
                name,
                *options,
                "--",
                *verb,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env=ENV,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        self.id = proc.stdout.strip().splitlines()[-1]
        self.name = name

    def log(self, index: int | None = None) -> str:
        path = self.logs / (
            f"{self.name}-{self.id}.out" if index is None else f"{self.name}-{self.id}_{index}.out"
        )
        return path.read_text(errors="replace") if path.exists() else "<no log yet>"

    def states(self) -> list[JobState]:
        return job_states(self.id)

    def show(self) -> dict[str, str]:
        """``scontrol show job``'s fields (a job that is not an array)."""
        text = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", self.id],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return dict(item.split("=", 1) for item in text.split() if "=" in item)

    def ended(self) -> bool:
        return all_ended(self.states())

    def wait(self, timeout: float, *, until: Callable[[list[JobState]], bool] = all_ended) -> list[JobState]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.states()
            if until(states):
                return states
            time.sleep(0.2)
        pytest.fail(f"job {self.id} still {self.states()} after {timeout} s; log:\n{self.log()[-4000:]}")

    def cancel(self) -> None:
        subprocess.run(["scancel", self.id], capture_output=True, timeout=60, check=False)


@pytest.fixture
def jobs():
    submitted: list[Job] = []
    yield submitted
    for job in submitted:
        job.cancel()


def test_two_torchrun_tasks_meet_by_rendezvous_and_train_as_a_local_run(
    local_slurm, shards, reference, tmp_path, jobs
):
    output = tmp_path / "run"
    job = Job(tmp_path, train_args(shards, f"output_dir={output}", "tracking.enabled=false"), *TWO_TASKS)
    jobs.append(job)
    [state] = job.wait(180)
    log = job.log()
    assert state.state == "COMPLETED", f"{state}\n{log[-4000:]}\n{local_slurm.logs()}"
    assert job.show()["NumTasks"] == "2"
    script = (output / "slurm" / "lmpipe-test.sbatch").read_text()
    for line in (
        "#SBATCH --ntasks-per-node=2",
        '    --nnodes="$SLURM_NTASKS" \\',
        "    --nproc_per_node=1 \\",
    ):
        assert line in script.splitlines(), line
    assert step_losses(log) == pytest.approx(reference[0], abs=2e-4)
    assert json.loads((output / "result.json").read_text())["world_size"] == 2


# ddp: the signal, the checkpoint at the end of the step all ranks agree on, the requeue and the resume are
# strategy-independent (``pipeline.train.preemption``: a flag summed into the step's loss reduction, then
# the strategy's own checkpoint save). How each strategy saves and resumes is checked without Slurm, for
# ddp, fsdp, zero2 and zero3 (test_resume_world_size, test_kill_resume). A zero3 case here cost CI ~110 s
# of its 2 cores (a Slurm job run twice and a reference run, each rank importing DeepSpeed).
def test_preempted_job_checkpoints_requeues_and_resumes_to_the_same_end(
    local_slurm, shards, background_reference, tmp_path, jobs
):
    from mlflow.tracking import MlflowClient

    output, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = Job(
        tmp_path,
        train_args(shards, f"output_dir={output}", f"tracking.uri={uri}", "parallel.strategy=ddp"),
    )  # 1 task x 2 ranks
    jobs.append(job)
    background_reference.start()
    deadline = time.monotonic() + 120
    while newest_checkpoint(output) is None:
        assert time.monotonic() < deadline and not job.ended(), job.log()[-4000:]
        time.sleep(0.05)
    subprocess.run(["scancel", "--signal=USR2", "--batch", job.id], check=True, timeout=60)

    # Requeued, it waits out the revoked credential of its first run (AuthInfo=cred_expire, 10 s in the
    # harness's slurm.conf, 120 s by default) and starts by itself. Forcing StartTime=now instead races
    # that revocation: slurmd refuses the batch ("Job credential revoked") and the job fails.
    job.wait(60, until=lambda states: [(s.state, s.restarts) for s in states] == [("PENDING", "1")])
    [state] = job.wait(240)
    log = job.log()
    assert (state.state, state.restarts) == ("COMPLETED", "1"), (
        f"{state}\n{log[-4000:]}\n{local_slurm.logs()}"
    )

    # One log holds both runs (--open-mode=append): the stop at a checkpoint, the requeue, the resume.
    stopped_at = int(re.search(r"stopped by SIGTERM after step (\d+)", log).group(1))
    assert 5 <= stopped_at < STEPS
    for line in (
        "restart 0",
        "lmpipe: USR2: asking every rank to checkpoint and stop",
        f"lmpipe: requeueing job {job.id} (restart 1 of at most 3)",
        "restart 1",
    ):
        assert line in log, line
    assert log.index("restart 0") < log.index("requeueing") < log.index("restart 1")
    reference = background_reference.get()
    assert step_losses(log) == pytest.approx(reference[0], abs=2e-4)
    result = json.loads((output / "result.json").read_text())
    assert result["steps"] == STEPS
    assert result["last_train_loss"] == pytest.approx(reference[1]["last_train_loss"], abs=2e-4)
    assert result["final_val_loss"] == pytest.approx(reference[1]["final_val_loss"], abs=2e-4)

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lmpipe").experiment_id])
    assert [run.info.run_id for run in runs] == [result["mlflow_run_id"]]  # the rerun re-attached to its run
    history = {m.step: m.value for m in client.get_metric_history(result["mlflow_run_id"], "train/loss")}
    assert sorted(history) == list(range(1, STEPS + 1)) and runs[0].info.status == "FINISHED"


def test_job_array_runs_each_config_and_reports_each_element(local_slurm, shards, tmp_path, jobs):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # create the schema before two elements race to
    configs = []
    for index, lr in enumerate(("1e-3", "3e-3", "1e-2")):
        configs.append(tmp_path / f"lr{index}.yaml")
        configs[-1].write_text(f"output_dir: {tmp_path / f'lr{index}'}\ntrain:\n  lr: {lr}\n")
    verb = train_args(shards, f"tracking.uri={uri}", "train.max_steps=20")
    job = Job(
        tmp_path,
        verb,
        "--set",
        "procs_per_node=1",
        "--set",
        "cpus_per_task=1",
        "--array-configs",
        *map(str, configs),
        "--max-parallel",
        "2",
        name="sweep",
    )
    jobs.append(job)
    states = job.wait(240, until=lambda states: len(states) == 3 and all_ended(states))
    failed_logs = "\n".join(job.log(i)[-3000:] for i, s in enumerate(states) if s.state != "COMPLETED")
    expected = [(f"{job.id}_{i}", "COMPLETED") for i in range(3)]
    assert [(s.job, s.state) for s in states] == expected, failed_logs
    status = subprocess.run(
        [LMPIPE, "launch", "status", job.id], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert [line.split()[:2] for line in status.splitlines()[1:]] == [
        [f"{job.id}_{i}", "COMPLETED"] for i in range(3)
    ]
    assert "#SBATCH --array=0-2%2" in (tmp_path / "logs" / "sweep.sbatch").read_text()

    results = [json.loads((tmp_path / f"lr{i}" / "result.json").read_text()) for i in range(3)]
    assert len({result["last_train_loss"] for result in results}) == 3  # three learning rates, three curves
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("lmpipe").experiment_id])
    assert sorted(run.info.run_id for run in runs) == sorted(result["mlflow_run_id"] for result in results)
    assert {run.info.status for run in runs} == {"FINISHED"}


def test_deepspeed_launcher_variant_trains_as_torchrun_does(local_slurm, shards, tmp_path, jobs):
    zero2 = train_args(shards, "tracking.enabled=false", "parallel.strategy=zero2", "train.max_steps=8")
    # The same training on 2 ranks forked here, as torchrun's would run (the torchrun launcher itself is
    # test_launchers'): it trains while the Slurm job is scheduled and DeepSpeed's launcher starts.
    local = start_job(
        [*zero2, f"output_dir={tmp_path / 'local'}"], 2, tmp_path / "local.log", {"OMP_NUM_THREADS": "1"}
    )
    try:
        output = tmp_path / "run"
        job = Job(
            tmp_path,
            [*zero2, f"output_dir={output}"],
            "--launcher",
            "deepspeed",
            "--set",
            "env.DS_ACCELERATOR=cpu",
        )
        jobs.append(job)
        [state] = job.wait(240)
        log = job.log()
        assert state.state == "COMPLETED", f"{state}\n{log[-4000:]}"
        assert (tmp_path / "logs" / f"hostfile-{job.id}").read_text() == f"{job.show()['NodeList']} slots=2\n"
        assert local.wait(240) == 0, (tmp_path / "local.log").read_text()[-4000:]
    finally:
        local.kill()  # still running only if the test failed first
    expected = step_losses((tmp_path / "local.log").read_text())
    assert sorted(expected) == list(range(1, 9))
    assert step_losses(log) == pytest.approx(expected, abs=2e-4)
    assert json.loads((output / "result.json").read_text())["world_size"] == 2


def test_a_rank_that_dies_ends_the_job_as_failed_with_the_cause_in_the_log(
    local_slurm, shards, tmp_path, jobs
):
    job = Job(
        tmp_path,
        train_args(
            shards, f"output_dir={tmp_path / 'run'}", "tracking.enabled=false", "train.max_steps=100000"
        ),
        *TWO_TASKS,
    )
    jobs.append(job)
    deadline = time.monotonic() + 120
    while not re.search(r"train step\s+1/", job.log()):  # both ranks are in the training loop
        assert time.monotonic() < deadline and not job.ended(), job.log()[-4000:]
        time.sleep(0.1)
    rank1 = trainer_pid(job.id, rank=1)
    os.kill(rank1, signal.SIGKILL)  # as the kernel's OOM killer would
    killed = time.monotonic()

    [state] = job.wait(120)
    log = job.log()
    assert state.state == "FAILED" and state.restarts == "0", (
        f"{state}\n{log[-4000:]}"
    )  # a crash is not requeued
    assert time.monotonic() - killed < 120
    assert f"Signal 9 (SIGKILL) received by PID {rank1}" in log, log[-4000:]


def trainer_pid(job_id: str, *, rank: int) -> int:
    """The trainer process of global ``rank`` in the job: torchrun's child, with RANK in its environment."""
    for proc in Path("/proc").iterdir():
        try:
            env = dict(
                item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item
            )
            cmdline = (proc / "cmdline").read_text()
        except (OSError, ValueError):
            continue
        if env.get("SLURM_JOB_ID") == job_id and env.get("RANK") == str(rank) and "pipeline.cli" in cmdline:
            return int(proc.name)
    raise AssertionError(f"no rank {rank} process of job {job_id}")
