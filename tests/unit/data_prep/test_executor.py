"""Executors without a cluster: the rendered sbatch script, the local runner, and the Slurm
executor's bookkeeping against stand-in ``sbatch`` / ``squeue`` commands."""

from __future__ import annotations

import json
import os
import shlex

import pytest

from data_prep.config import PrepConfig
from data_prep.executor import Stage, TaskFailed
from data_prep.executor.local import THREAD_POOL_SIZES, LocalExecutor, worker_env
from data_prep.executor.slurm import SlurmExecutor, render_script
from data_prep.prep import Task, make_executor
from launch.slurm import task as task_main
from launch.slurm.profile import SlurmArrayProfile
from pipeline.cli.main import main
from pipeline.core.errors import ConfigError


def sbatch_options(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_script_has_array_range_cap_log_path_and_task_main(tmp_path):
    cfg = SlurmArrayProfile(max_parallel=2, job_name="prep-cc")
    plan, logs = tmp_path / "slurm" / "plan.json", tmp_path / "slurm" / "logs"
    script = render_script(cfg, 7, plan, logs, job_name="prep-cc-prep", python="/venv/bin/python")
    options = sbatch_options(script)
    assert script.startswith("#!/bin/bash\n")
    assert "--array=0-6%2" in options
    assert "--job-name=prep-cc-prep" in options
    assert f"--output={logs}/%x-%A_%a.out" in options
    assert not any(o.startswith(("--dependency", "--kill-on-invalid-dep")) for o in options)
    assert not any(o.startswith(("--partition", "--time", "--mem", "--cpus-per-task")) for o in options)
    body = script.splitlines()[-1]
    assert body == f'exec /venv/bin/python -m launch.slurm.task {plan} "${{SLURM_ARRAY_TASK_ID}}"'


def test_script_without_cap_and_with_every_option():
    cfg = SlurmArrayProfile(
        partition="gpu", time="2:00:00", cpus_per_task=4, mem="8G", sbatch_args=["--qos=high", "--account=lm"]
    )
    options = sbatch_options(
        render_script(cfg, 1, "/o/plan.json", "/o/logs", job_name="lmpipe-dedup", depends_on="41")
    )
    # The one order of launch.slurm.sbatch.sbatch_options, shared with training launches.
    assert options == [
        "--job-name=lmpipe-dedup",
        f"--chdir={shlex.quote(os.getcwd())}",
        "--partition=gpu",
        "--time=2:00:00",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--cpus-per-task=4",
        "--mem=8G",
        "--output=/o/logs/%x-%A_%a.out",
        "--open-mode=append",
        "--no-requeue",
        "--array=0-0",
        "--dependency=afterok:41",
        "--kill-on-invalid-dep=yes",
        "--qos=high",
        "--account=lm",
    ]


def test_script_values_are_shell_quoted():
    cfg = SlurmArrayProfile(partition="a b", sbatch_args=["--comment=it's"])
    script = render_script(
        cfg, 3, "/out dir/plan.json", "/out dir/logs", job_name="x;rm -rf /", python="/my env/python"
    )
    options = sbatch_options(script)
    assert f"--job-name={shlex.quote('x;rm -rf /')}" in options
    assert f"--partition={shlex.quote('a b')}" in options
    assert f"--output={shlex.quote('/out dir/logs/%x-%A_%a.out')}" in options
    assert shlex.quote("--comment=it's") in options
    assert shlex.split(script.splitlines()[-1]) == [
        "exec",
        "/my env/python",
        "-m",
        "launch.slurm.task",
        "/out dir/plan.json",
        "${SLURM_ARRAY_TASK_ID}",
    ]


def test_script_needs_a_task():
    with pytest.raises(ValueError):
        render_script(SlurmArrayProfile(), 0, "/p.json", "/logs", job_name="lmpipe-prep")


def record(calls):
    def fn(task, progress):
        calls.append(task)
        if progress is not None:
            progress(len(task))

    return fn


def test_local_executor_runs_each_task_in_order_and_passes_progress():
    calls, seen = [], []
    LocalExecutor(workers=1).run(["a", "bb", "ccc"], record(calls), seen.append)
    assert calls == ["a", "bb", "ccc"] and seen == [1, 2, 3]
    LocalExecutor(workers=4).run(["x"], record(calls))  # one task: no pool
    assert calls[-1] == "x"


def test_local_executor_runs_stages_one_after_another():
    calls = []
    LocalExecutor(workers=1).run_stages(
        [
            Stage("a", ["1", "2"], record(calls)),
            Stage("b", [], record(calls)),
            Stage("c", ["3"], record(calls)),
        ]
    )
    assert calls == ["1", "2", "3"]


def write_env(path, progress):
    """A pool task (module level, so picklable): what its worker's environment says of thread pools."""
    names = (*THREAD_POOL_SIZES, "TOKENIZERS_PARALLELISM")
    with open(path, "w") as f:
        json.dump({name: os.environ.get(name) for name in names}, f)
    if progress is not None:
        progress(1)


def test_pool_workers_share_the_cores_among_their_thread_pools():
    """Two workers on two cores: one tokenizer (Rust) thread each, parallelism off, so the workers do
    not each start a thread per core and fight over them."""
    assert worker_env(2, cores=2) == {
        "RAYON_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    assert worker_env(2, cores=16)["RAYON_NUM_THREADS"] == "8"
    assert worker_env(2, cores=16)["TOKENIZERS_PARALLELISM"] == "true"
    assert worker_env(4, cores=2)["RAYON_NUM_THREADS"] == "1"


def test_one_pool_runs_every_stage_with_the_worker_environment(tmp_path):
    paths = [str(tmp_path / f"{stage}{i}.json") for stage in "ab" for i in range(2)]
    seen = []
    LocalExecutor(workers=2).run_stages(
        [Stage("a", paths[:2], write_env), Stage("b", paths[2:], write_env)], seen.append
    )
    assert sum(seen) == 4
    expected = worker_env(2)
    for path in paths:
        assert json.loads(open(path).read()) == expected


def test_local_executor_reraises_a_failure():
    def fail(task, progress):
        raise OSError(f"cannot read {task}")

    with pytest.raises(OSError, match="cannot read a"):
        LocalExecutor().run(["a"], fail)


def test_config_executor_choice_and_slurm_checks():
    base = ["input=[a.warc]", "output=o"]
    assert PrepConfig.load(None, base).executor == "local"
    cfg = PrepConfig.load(None, base + ["executor=slurm", "slurm.max_parallel=3", "slurm.partition=cpu"])
    assert (cfg.executor, cfg.slurm.max_parallel, cfg.slurm.partition) == ("slurm", 3, "cpu")
    assert PrepConfig.from_dict(cfg.to_dict()) == cfg  # what task_main rebuilds from plan.json
    with pytest.raises(ConfigError, match="executor: got 'k8s'; valid choices: local, slurm"):
        PrepConfig.load(None, base + ["executor=k8s"])
    with pytest.raises(ConfigError, match="slurm.max_parallel"):
        PrepConfig.load(None, base + ["slurm.max_parallel=-1"])
    assert isinstance(make_executor(PrepConfig.load(None, base + ["workers=3"])), LocalExecutor)
    assert isinstance(make_executor(cfg), SlurmExecutor)


def test_slurm_section_is_a_cluster_profile(tmp_path, fake_slurm):
    """The keys users wrote under ``slurm:`` stay valid, and every profile field (account, qos,
    constraint, setup, env, log_dir) now reaches the stage's array script too."""
    path = tmp_path / "prep.yaml"
    path.write_text(
        "input: [a.warc]\noutput: o\nexecutor: slurm\nslurm:\n"
        "  partition: cpu\n  time: '30'\n  cpus_per_task: 2\n  mem: 4G\n  max_parallel: 3\n"
        "  job_name: cc\n  sbatch_args: [--comment=nightly]\n  poll_seconds: 1\n  timeout_minutes: 9\n"
        "  account: lm\n  qos: low\n  constraint: avx2\n  setup: [module load python]\n"
        "  env: {HF_HOME: /scratch/hf}\n  log_dir: array-logs\n"
    )
    profile = PrepConfig.load(path).slurm
    assert isinstance(profile, SlurmArrayProfile)
    executor = SlurmExecutor(profile, tmp_path / "slurm", {}, lambda stage, task: True)
    executor.run_stages([Stage("prep", [Task("t", "/x", "warc")])])
    script = (tmp_path / "slurm" / "prep" / "prep.sbatch").read_text()
    options = sbatch_options(script)
    expected = ["--account=lm", "--qos=low", "--constraint=avx2", "--time=30", "--mem=4G", "--array=0-0%3"]
    assert [option for option in expected if option not in options] == []
    assert f"--output={tmp_path}/slurm/array-logs/%x-%A_%a.out" in options
    assert options[-1] == "--comment=nightly" and "--no-requeue" in options
    assert not any(option.startswith("--signal") for option in options)
    assert "module load python" in script.splitlines()
    assert "export HF_HOME=/scratch/hf" in script.splitlines()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("slurm.signal_seconds=60", "slurm.signal_seconds: array tasks do not checkpoint"),
        ("slurm.container.image=img.sif", "slurm.container.image: array elements run outside"),
        ("slurm.nodes=2", "slurm.nodes: an array element is one task on one node"),
        ("slurm.job_name=' '", "slurm.job_name: must not be empty"),
        ("slurm.time=2h", "slurm.time: '2h' is not a Slurm time"),
    ],
)
def test_slurm_section_rejects_what_an_array_cannot_do(override, message):
    with pytest.raises(ConfigError, match=message):
        PrepConfig.load(None, ["input=[a.warc]", "output=o", override])


def test_cli_executor_flag_reaches_the_config(tmp_path, capsys):
    warc = tmp_path / "a.warc.gz"
    warc.write_bytes(b"")
    code = main(["data", "prep", "--input", str(warc), "--output", str(tmp_path / "o"), "--executor", "k8s"])
    assert code == 2
    assert "executor: got 'k8s'" in capsys.readouterr().err


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that records its script and answers job 42; ``squeue`` that reports an empty queue;
    ``scontrol`` and ``sacct`` that know no job (the machine's own Slurm must not answer)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/sbatch.calls\necho "42;cluster"\n')
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")
    for unknowing in ("scontrol", "sacct"):
        (bin_dir / unknowing).write_text("#!/bin/sh\necho 'Invalid job id specified' >&2\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "sbatch.calls"


def test_slurm_executor_with_no_task_submits_nothing(tmp_path, fake_slurm):
    SlurmExecutor(SlurmArrayProfile(), tmp_path / "slurm", {}, lambda stage, task: True).run_stages(
        [Stage("prep")]
    )
    assert not fake_slurm.exists() and not (tmp_path / "slurm").exists()


def test_slurm_executor_chains_stages_and_names_the_logs_of_failed_tasks(tmp_path, fake_slurm, capsys):
    tasks = [Task(f"t{i}", f"/in/{i}.warc.gz", "warc") for i in range(3)]
    cfg = SlurmArrayProfile(max_parallel=2, poll_seconds=0.01)
    executor = SlurmExecutor(
        cfg,
        tmp_path / "slurm",
        {"output": "o"},
        lambda stage, task: not (stage == "dedup" and task.name == "t1"),
    )
    with pytest.raises(TaskFailed) as failure:
        executor.run_stages(
            [Stage("prep", tasks), Stage("cluster", [Task("all", "", "")]), Stage("dedup", tasks)]
        )
    log = tmp_path / "slurm" / "logs" / "lmpipe-dedup-42_1.out"
    assert str(failure.value) == f"1 of 3 dedup task(s) of Slurm job 42 failed; see {log}"
    err = capsys.readouterr().err
    assert "submitted Slurm job array 42 for stage prep (3 task(s), at most 2 at a time)" in err
    assert "for stage cluster (1 task(s), at most 2 at a time, after job 42)" in err
    assert "slurm: done prep 3/3, cluster 1/1, dedup 2/3" in err
    plan = json.loads((tmp_path / "slurm" / "prep" / "plan.json").read_text())
    assert plan == {
        "stage": "prep",
        "config": {"output": "o"},
        "tasks": [{"name": f"t{i}", "path": f"/in/{i}.warc.gz", "format": "warc"} for i in range(3)],
    }
    assert "--array=0-2%2" in sbatch_options((tmp_path / "slurm" / "prep" / "prep.sbatch").read_text())
    dedup_options = sbatch_options((tmp_path / "slurm" / "dedup" / "dedup.sbatch").read_text())
    assert "--dependency=afterok:42" in dedup_options and "--job-name=lmpipe-dedup" in dedup_options
    calls = fake_slurm.read_text().splitlines()
    assert calls == [
        f"--parsable {tmp_path / 'slurm' / stage / stage}.sbatch" for stage in ("prep", "cluster", "dedup")
    ]
    assert (tmp_path / "slurm" / "logs").is_dir()  # Slurm does not create it


def test_slurm_executor_reports_a_failed_sbatch(tmp_path, fake_slurm):
    (fake_slurm.parent / "bin" / "sbatch").write_text(
        "#!/bin/sh\necho 'sbatch: error: invalid partition' >&2\nexit 1\n"
    )
    executor = SlurmExecutor(SlurmArrayProfile(), tmp_path / "slurm", {}, lambda stage, task: False)
    with pytest.raises(TaskFailed, match="failed: sbatch: error: invalid partition"):
        executor.run_stages([Stage("prep", [Task("t", "/x", "warc")])])


def test_task_main_skips_a_done_task(tmp_path, capsys):
    cfg = PrepConfig.load(
        None, [], values={"input": [str(tmp_path / "a.warc.gz")], "output": str(tmp_path / "o")}
    )
    (tmp_path / "o" / "completions" / "prep").mkdir(parents=True)
    (tmp_path / "o" / "completions" / "prep" / "t.done").write_text("{}")
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "stage": "prep",
                "config": cfg.to_dict(),
                "tasks": [{"name": "t", "path": "/x", "format": "warc"}],
            }
        )
    )
    assert task_main.main([str(plan), "0"]) == 0
    assert "already done; skipped" in capsys.readouterr().out
    assert task_main.main([]) == 2
