"""The one sbatch renderer: every script lmpipe submits, training launch or task array, and ``submit``.

Every script shares its head: the ``#SBATCH`` options block of ``sbatch_options`` (one order for
every job kind, arrays as ``--array=0-K%P``), ``set -euo pipefail``, the profile's ``setup`` lines
and its environment. Every value from the user is shell-quoted. Two bodies follow it:

A training launch (``render_sbatch``, DESIGN.md §6): one task per node, each a ``torchrun`` that
meets the others by c10d rendezvous on the first node of the allocation, at a port derived from
the job id. (``tasks_per_node`` > 1 starts several torchruns per node, each a rendezvous node of
its own: the multi-node shape on a one-node test cluster.) Preemption: ``--signal=B:USR2@<s>``
warns the batch shell, which passes the warning on as SIGTERM to every process of the job
step (``scancel --signal=TERM``: torchrun and the trainers both handle SIGTERM in every torch
version, whereas USR2 would kill a torchrun that was not told to handle it, and a SIGTERM sent
to ``srun`` itself makes it SIGKILL the tasks). The trainers checkpoint and exit 75; the shell
then requeues the job (``scontrol requeue``) until ``max_requeues``, and the requeued run resumes
from the checkpoint (``checkpoint.resume=auto``). The DeepSpeed variant runs DeepSpeed's launcher
on every node instead of torchrun, with a hostfile built from the allocation (``host slots=G``),
``--no_ssh`` and the node's rank from ``SLURM_NODEID``: the launcher on each node starts that
node's ranks, none reaches another node over ssh.

A task array (``render_task_array``): element ``i`` runs ``python -m launch.slurm.task PLAN i``,
the one entry point of every task kind (data prep, tokenize), which does task ``i`` of the plan.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launch.slurm.profile import SlurmProfile
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.files import EXIT_PREEMPTED

PORT_BASE, PORT_SPAN = 20000, 20000
"""The rendezvous port is ``PORT_BASE + job id % PORT_SPAN``: two jobs sharing a node differ."""
LAUNCHERS = ("torchrun", "deepspeed")
TASK_MODULE = "launch.slurm.task"
"""What every task-array element runs with ``python -m``."""


@dataclass(frozen=True)
class SlurmJob:
    """One submission: the verb to run and where; the cluster side is the ``SlurmProfile``."""

    verb_args: tuple[str, ...]
    job_name: str
    workdir: str
    """The job's working directory (``--chdir``): relative paths in the verb args start here."""
    array_configs: tuple[str, ...] = ()
    """A job array: element ``i`` runs the verb with ``--config array_configs[i]``."""
    max_parallel: int = 0
    """Array elements running at once; 0: no cap."""
    launcher: str = "torchrun"
    """What srun starts on each node: ``torchrun`` or DeepSpeed's launcher (``deepspeed``)."""


def default_env(profile: SlurmProfile) -> dict[str, str]:
    """lmpipe's environment defaults, then the profile's ``env`` over them."""
    env: dict[str, str] = {}
    if profile.cpus_per_task:
        env["OMP_NUM_THREADS"] = str(max(1, profile.cpus_per_task // profile.ranks_per_node))
    if profile.gpus_per_node:
        env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"  # a hung NCCL collective fails the job instead of idling
    return {**env, **profile.env}


@dataclass(frozen=True)
class TaskArray:
    """One stage of tasks as a job array: element ``i`` does task ``i`` of the plan."""

    job_name: str
    workdir: str
    """The elements' working directory (``--chdir``): relative paths in the plan's config start here."""
    plan: str
    """The plan file (the stage, the resolved config, the tasks) that ``launch.slurm.task`` reads."""
    n_tasks: int
    max_parallel: int = 0
    """Elements running at once; 0: no cap."""
    depends_on: str = ""
    """A job id: start once it succeeded, and be cancelled if it failed; empty: start at once."""
    python: str = sys.executable


def render_sbatch(profile: SlurmProfile, job: SlurmJob) -> str:
    """A training launch's whole script; ``bash -n`` clean, stable for a given profile and job
    (golden-tested)."""
    _check_job(profile, job)
    gpus = (
        f" x {profile.gpus_per_node} GPU(s)"
        if profile.gpus_per_node
        else f" x {profile.ranks_per_node} rank(s)"
    )
    per_node = (
        f"{profile.tasks_per_node} {job.launcher}s per node, each meeting the others as a node"
        if profile.tasks_per_node > 1
        else f"one {job.launcher} per node"
    )
    comments = [
        f"Written by `lmpipe launch slurm`: {profile.nodes} node(s){gpus}, {per_node}.",
        "Submit it by hand with `sbatch <this file>`."
        + (" A preempted or timed-out run checkpoints and is requeued." if profile.max_requeues else ""),
    ]
    options = sbatch_options(
        profile, job.job_name, job.workdir, array_size=len(job.array_configs), max_parallel=job.max_parallel
    )
    lines = [
        *_head(profile, comments, options),
        *_section("Job array: element i runs the i-th resolved config.", _array_lines(job.array_configs)),
        *_section(
            f"Rendezvous: every node's {job.launcher} meets on the first node, at a port derived from "
            "the job id.\n# (sed, not head: head would stop reading and SIGPIPE scontrol, which pipefail "
            "makes fatal.)",
            [
                'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
                f"rdzv_port=$(({PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN}))",
                *(_hostfile_lines(profile) if job.launcher == "deepspeed" else []),
                'echo "lmpipe: job $SLURM_JOB_ID on $SLURM_NNODES node(s), rendezvous $head_node:$rdzv_port,'
                ' restart ${SLURM_RESTART_COUNT:-0}"',
            ],
        ),
        *_run_lines(profile, job),
    ]
    return "\n".join(lines) + "\n"


def _run_lines(profile: SlurmProfile, job: SlurmJob) -> list[str]:
    """The launch in the background, the preemption trap around it, and the requeue after it."""
    return [
        *_section(
            "Preemption warning (USR2 to this shell): every rank gets SIGTERM, checkpoints and exits "
            f"{EXIT_PREEMPTED}.",
            [
                "preempted=0",
                "on_preempt() {",
                "  preempted=1",
                '  echo "lmpipe: USR2: asking every rank to checkpoint and stop"',
                '  scancel --signal=TERM "$SLURM_JOB_ID" || true',
                "}",
                "trap on_preempt USR2",
            ],
        ),
        *_section(
            "Launch in the background, so the trap can run while the step does.",
            [*_launch_lines(profile, job), "step=$!"],
        ),
        *_section(
            "A trapped signal ends `wait` early: wait on until the ranks have saved and exited.",
            [
                "status=0",
                'wait "$step" || status=$?',
                'while kill -0 "$step" 2>/dev/null; do',
                "  status=0",
                '  wait "$step" || status=$?',
                "done",
            ],
        ),
        *_section(
            "Requeue a preempted run; the rerun resumes from its checkpoint (checkpoint.resume=auto).",
            _requeue_lines(profile.max_requeues),
        ),
    ]


def render_task_array(profile: SlurmProfile, array: TaskArray) -> str:
    """A task array's whole script: the shared head, then each element ``exec``s the task entry point."""
    if array.n_tasks < 1:
        raise InputError("a job array needs at least one task")
    if array.max_parallel < 0:
        raise ConfigError(f"max_parallel must be >= 0, got {array.max_parallel}")
    comments = [
        f"Written by lmpipe: {array.n_tasks} array element(s), one per task listed in {array.plan}.",
        "Each element runs its task and leaves a completion marker; a rerun skips finished ones.",
    ]
    options = sbatch_options(
        profile,
        array.job_name,
        array.workdir,
        array_size=array.n_tasks,
        max_parallel=array.max_parallel,
        depends_on=array.depends_on,
    )
    q = shlex.quote
    lines = [
        *_head(profile, comments, options),
        "",
        'echo "lmpipe: array task ${SLURM_ARRAY_TASK_ID} of job ${SLURM_ARRAY_JOB_ID} on $(hostname)"',
        f'exec {q(array.python)} -m {TASK_MODULE} {q(array.plan)} "${{SLURM_ARRAY_TASK_ID}}"',
    ]
    return "\n".join(lines) + "\n"


def sbatch_options(
    profile: SlurmProfile,
    job_name: str,
    workdir: str,
    *,
    array_size: int = 0,
    max_parallel: int = 0,
    depends_on: str = "",
) -> list[str]:
    """The ``#SBATCH`` options of any job, in one order: the job, the allocation, the log, requeueing,
    the array and its dependency, then the profile's own ``sbatch_args``."""
    q = shlex.quote
    log_name = "%x-%A_%a.out" if array_size else "%x-%j.out"
    options = [f"--job-name={q(job_name)}", f"--chdir={q(workdir)}"]
    for flag, value in (
        ("partition", profile.partition),
        ("account", profile.account),
        ("qos", profile.qos),
        ("time", profile.time),
        ("time-min", profile.time_min),
    ):
        if value:
            options.append(f"--{flag}={q(value)}")
    options += [f"--nodes={profile.nodes}", f"--ntasks-per-node={profile.tasks_per_node}"]
    if profile.gpus_per_node:
        options.append(f"--gpus-per-node={profile.gpus_per_node}")
    if profile.cpus_per_task:
        options.append(f"--cpus-per-task={profile.cpus_per_task}")
    for flag, value in (
        ("mem", profile.mem),
        ("constraint", profile.constraint),
        ("nodelist", profile.nodelist),
    ):
        if value:
            options.append(f"--{flag}={q(value)}")
    if profile.exclusive:
        options.append("--exclusive")
    options += [f"--output={q(str(Path(profile.log_dir) / log_name))}", "--open-mode=append"]
    if profile.signal_seconds:
        options.append(f"--signal=B:USR2@{profile.signal_seconds}")
    options.append("--requeue" if profile.max_requeues else "--no-requeue")
    if array_size:
        cap = f"%{max_parallel}" if max_parallel else ""
        options.append(f"--array=0-{array_size - 1}{cap}")
    if depends_on:
        # A failed dependency cancels this job instead of leaving it pending forever.
        options += [f"--dependency=afterok:{q(depends_on)}", "--kill-on-invalid-dep=yes"]
    return options + [q(option) for option in profile.sbatch_args]


def submit(script: Path) -> str:
    """``sbatch --parsable SCRIPT``; returns the job id."""
    try:
        proc = subprocess.run(
            ["sbatch", "--parsable", str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError("sbatch not found on PATH; is this a Slurm login node?") from None
    if proc.returncode != 0:
        reason = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
        raise ConfigError(f"sbatch {script} failed: {reason}")
    return proc.stdout.strip().split(";")[0]


def _check_job(profile: SlurmProfile, job: SlurmJob) -> None:
    if not job.verb_args:
        raise InputError(
            "give the verb to run after --, e.g. lmpipe launch slurm --profile P -- train --config C"
        )
    if job.max_parallel < 0:
        raise InputError(f"--max-parallel must be >= 0, got {job.max_parallel}")
    if job.launcher not in LAUNCHERS:
        raise InputError(f"launcher {job.launcher!r}: valid choices: {', '.join(LAUNCHERS)}")
    if job.launcher == "deepspeed" and profile.tasks_per_node > 1:
        raise ConfigError("--launcher deepspeed runs one launcher per node: leave tasks_per_node at 1")


def _head(profile: SlurmProfile, comments: Sequence[str], options: Sequence[str]) -> list[str]:
    """What every script starts with: what wrote it, its options, then the profile's set-up and
    environment."""
    return [
        "#!/bin/bash",
        *(f"# {comment}" for comment in comments),
        *(f"#SBATCH {option}" for option in options),
        "",
        "set -euo pipefail",
        *_section(
            "Cluster set-up (profile: setup); module systems may read unset variables, so -u waits.",
            ["set +u", *profile.setup, "set -u"] if profile.setup else [],
        ),
        *_section("Environment (profile: env, over lmpipe's defaults).", _env_lines(default_env(profile))),
    ]


def _section(comment: str, body: Sequence[str]) -> list[str]:
    return ["", f"# {comment}", *body] if body else []


def _env_lines(env: dict[str, str]) -> list[str]:
    return [
        f"export {name}={shlex.quote(value)}" if value else f"unset {name}" for name, value in env.items()
    ]


def _array_lines(configs: Sequence[str]) -> list[str]:
    if not configs:
        return []
    return [
        "configs=(",
        *(f"  {shlex.quote(config)}" for config in configs),
        ")",
        "config=${configs[$SLURM_ARRAY_TASK_ID]}",
    ]


def _hostfile_lines(profile: SlurmProfile) -> list[str]:
    """DeepSpeed's hostfile, one ``host slots=G`` line per node of the allocation, next to the logs
    (a shared directory: every node's launcher reads it)."""
    hostfile = shlex.quote(str(Path(profile.log_dir) / "hostfile-")) + '"$SLURM_JOB_ID"'
    slots = f"sed 's/$/ slots={profile.ranks_per_node}/'"
    return [f"hostfile={hostfile}", f'scontrol show hostnames "$SLURM_JOB_NODELIST" | {slots} > "$hostfile"']


def _launch_lines(profile: SlurmProfile, job: SlurmJob) -> list[str]:
    """``srun [container] <launcher> <rendezvous> -m pipeline.cli <verb args>``, one argument group a line."""
    q = shlex.quote
    srun = [f"srun --kill-on-bad-exit=1 --ntasks-per-node={profile.tasks_per_node}"]
    if profile.cpus_per_task:
        # Given again: since Slurm 22.05 a step no longer inherits the allocation's --cpus-per-task, so
        # each task (a launcher and all its ranks) would be bound to one core's worth of CPUs.
        srun[0] += f" --cpus-per-task={profile.cpus_per_task}"
    wrapper: list[str] = []
    container = profile.container
    if container.image and container.runtime == "pyxis":
        srun.append(f"--container-image={q(container.image)}")
        if container.mounts:
            srun.append(f"--container-mounts={q(','.join(container.mounts))}")
        if container.workdir:
            srun.append(f"--container-workdir={q(container.workdir)}")
    elif container.image:
        binds = "".join(f" --bind {q(mount)}" for mount in container.mounts)
        workdir = f" --pwd {q(container.workdir)}" if container.workdir else ""
        gpu = " --nv" if profile.gpus_per_node else ""
        wrapper.append(f"apptainer exec{gpu}{binds}{workdir} {q(container.image)}")
    verb = [q(arg) for arg in job.verb_args]
    if job.array_configs:
        verb[1:1] = ['--config "$config"']
    if job.launcher == "torchrun":
        launcher = ["torchrun"]
        # Each task is a torchrun "node": with several per node, the rendezvous counts tasks.
        nnodes = '"$SLURM_NTASKS"' if profile.tasks_per_node > 1 else '"$SLURM_NNODES"'
        options = [
            f"--nnodes={nnodes}",
            f"--nproc_per_node={profile.ranks_per_node}",
            "--rdzv_backend=c10d",
            '--rdzv_endpoint="$head_node:$rdzv_port"',
            '--rdzv_id="$SLURM_JOB_ID"',
            "-m pipeline.cli",
        ]
    else:
        # SLURM_NODEID differs per node, so it is read inside each task (bash -c), not on the batch node;
        # the task's shell ignores the SIGTERM of a preemption so that the launcher below it waits for
        # the ranks' checkpoint instead of the step ending under them.
        launcher = ['bash -c \'trap "" TERM; deepspeed --node_rank="$SLURM_NODEID" "$@"\' deepspeed']
        options = [
            '--hostfile="$hostfile"',
            "--no_ssh",
            '--master_addr="$head_node"',
            '--master_port="$rdzv_port"',
            "--no_local_rank",
            "--module pipeline.cli",
        ]
    return [
        f"{' '.join(srun)} \\",
        *(f"  {part} \\" for part in [*wrapper, *launcher]),
        *(f"    {option} \\" for option in options),
        f"      {' '.join(verb)} &",
    ]


def _requeue_lines(max_requeues: int) -> list[str]:
    if not max_requeues:
        return ['exit "$status"']
    return [
        f"if [[ $status -eq {EXIT_PREEMPTED} || $preempted -eq 1 ]]; then",
        f"  if (( ${{SLURM_RESTART_COUNT:-0}} < {max_requeues} )); then",
        '    echo "lmpipe: requeueing job $SLURM_JOB_ID (restart $(( ${SLURM_RESTART_COUNT:-0} + 1 ))'
        f' of at most {max_requeues})"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "    exit 0",
        "  fi",
        f'  echo "lmpipe: not requeued: max_requeues={max_requeues} reached;'
        ' submit this script again to continue"',
        "fi",
        'exit "$status"',
    ]
