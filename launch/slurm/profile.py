"""A cluster's Slurm settings, kept apart from any run's config (``configs/slurm/*.yaml``).

The one profile type of every Slurm job lmpipe submits: training launches and sweep arrays load
it from a YAML file; the ``slurm:`` section of data prep and tokenize is one too
(``SlurmArrayProfile``, the same fields plus the few a task array adds).
Loaded with the repo's ``Config`` loader, so an unknown key or a wrong type is the same
one-line error as in every other config; ``required: [partition]`` in a profile makes an empty
partition an error that says how to give it (``--set partition=NAME``). Everything here is
rendered into an sbatch script by ``launch.slurm.sbatch``; the checks below reject values that
could not be rendered safely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from launch.hosts import check_nodelist
from pipeline.core.config import Config, require, require_choice
from pipeline.core.errors import InputError

CONTAINER_RUNTIMES = ("pyxis", "apptainer")
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|\d+")
"""Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class ContainerConfig(Config):
    image: str = ""
    """Empty: no container. Otherwise the image every rank runs in, e.g. ``nvcr.io#nvidia/pytorch:25.01-py3``
    (pyxis) or ``/shared/images/lmpipe.sif`` (apptainer)."""
    runtime: str = "pyxis"
    """pyxis: ``srun --container-image=...`` (enroot); apptainer: ``apptainer exec --nv IMAGE``
    inside srun."""
    mounts: list[str] = field(default_factory=list)
    """``SRC:DST`` bind mounts, e.g. the shared file system holding the shards and outputs."""
    workdir: str = ""
    """Working directory inside the container; empty: the runtime's default."""

    def check(self, prefix: str) -> None:
        require_choice(self.runtime, f"{prefix}runtime", CONTAINER_RUNTIMES)
        for mount in self.mounts:
            require(":" in mount, f"{prefix}mounts", f"{mount!r} is not SRC:DST")


@dataclass
class SlurmProfile(Config):
    """What one cluster needs to run a job; the run itself (model, data, steps) stays in its own config."""

    required: list[str] = field(default_factory=list)
    """Keys this cluster cannot do without (e.g. ``[partition, account]``): left empty, they are an error."""
    partition: str = ""
    """Empty: the cluster's default partition."""
    account: str = ""
    qos: str = ""
    time: str = "01:00:00"
    """Wall-clock limit: minutes, HH:MM:SS or D-HH:MM:SS; empty: the partition's default."""
    time_min: str = ""
    """With it, Slurm may start the job sooner with a shorter limit (backfill); a requeue continues it."""
    nodes: int = 1
    tasks_per_node: int = 1
    """torchrun agents per node, each starting ``procs_per_node`` ranks; all meet by c10d rendezvous as if
    each were a node. Leave it 1: more is for testing multi-node rendezvous on one machine (a one-node
    Slurm)."""
    gpus_per_node: int = 0
    """0: a CPU-only job (ranks per node from ``procs_per_node``)."""
    procs_per_node: int = 0
    """Ranks per node; 0: one per GPU. On CPU-only nodes, how many processes share the cores."""
    cpus_per_task: int = 0
    """Cores for each task (a torchrun and its ranks; one task per node); 0: the partition's default."""
    mem: str = ""
    """Memory per node, e.g. ``480G``; ``0`` asks for all of it; empty: the partition's default."""
    constraint: str = ""
    nodelist: str = ""
    """Run on exactly these nodes, as a Slurm hostlist (``gpu[01-04]``); empty: any."""
    exclusive: bool = False
    setup: list[str] = field(default_factory=list)
    """Shell lines run before the launch on the batch node (``module load ...``,
    ``source .venv/bin/activate``); copied verbatim: they are the user's own shell."""
    container: ContainerConfig = field(default_factory=ContainerConfig)
    env: dict[str, str] = field(default_factory=dict)
    """Exported before the launch, over the defaults (``launch.slurm.sbatch.default_env``); an empty
    value unsets the variable. NCCL_SOCKET_IFNAME is left alone unless set here: NCCL's own pick is
    usually right."""
    signal_seconds: int = 300
    """USR2 this long before the time limit: the ranks checkpoint and exit 75, and the job is requeued."""
    max_requeues: int = 3
    """Requeue at most this many times (preemption or time limit); 0: never."""
    sbatch_args: list[str] = field(default_factory=list)
    """Further sbatch options, one per item, e.g. ``["--comment=nightly"]``; rendered (quoted) after
    lmpipe's own, so sbatch lets them override those."""
    log_dir: str = "logs"
    """Where Slurm writes ``<job name>-<job id>.out`` (created before submitting; Slurm does not
    create it)."""

    @property
    def ranks_per_node(self) -> int:
        """Ranks each torchrun starts (per task: per node unless ``tasks_per_node`` > 1)."""
        return self.procs_per_node or self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node * self.ranks_per_node

    def check(self, prefix: str) -> None:
        for key in self.required:
            require_choice(key, f"{prefix}required", [name for name in _fields(self) if name != "required"])
            require(
                bool(getattr(self, key)),
                f"{prefix}{key}",
                f"this profile requires it; give it with --set {key}=VALUE",
            )
        for key in ("partition", "account", "qos", "constraint", "mem", "log_dir"):
            value = getattr(self, key)
            require(value.isprintable(), f"{prefix}{key}", f"{value!r} holds a control character")
        for key in ("time", "time_min"):
            value = getattr(self, key)
            require(
                not value or bool(_TIME.fullmatch(value)),
                f"{prefix}{key}",
                f"{value!r} is not a Slurm time (HH:MM:SS)",
            )
        require(self.nodes >= 1, f"{prefix}nodes", "must be >= 1")
        require(self.tasks_per_node >= 1, f"{prefix}tasks_per_node", "must be >= 1")
        require(
            self.tasks_per_node == 1 or not self.gpus_per_node,
            f"{prefix}tasks_per_node",
            "one torchrun per node on GPU nodes; more is only for CPU rendezvous tests",
        )
        require(self.gpus_per_node >= 0, f"{prefix}gpus_per_node", "must be >= 0")
        require(self.procs_per_node >= 0, f"{prefix}procs_per_node", "must be >= 0 (0: one per GPU)")
        require(
            not self.gpus_per_node or self.procs_per_node in (0, self.gpus_per_node),
            f"{prefix}procs_per_node",
            f"one rank per GPU: leave it 0 or set it to gpus_per_node={self.gpus_per_node}",
        )
        require(self.cpus_per_task >= 0, f"{prefix}cpus_per_task", "must be >= 0")
        if self.nodelist:
            try:
                check_nodelist(self.nodelist)
            except InputError as exc:
                require(False, f"{prefix}nodelist", str(exc))
        for line in self.setup:
            require("\n" not in line, f"{prefix}setup", "one shell line per list item")
        for option in self.sbatch_args:
            require(option.startswith("-"), f"{prefix}sbatch_args", f"{option!r} is not an sbatch option")
        for name in self.env:
            require(
                bool(_ENV_NAME.fullmatch(name)),
                f"{prefix}env",
                f"{name!r} is not an environment variable name",
            )
        require(self.signal_seconds >= 0, f"{prefix}signal_seconds", "must be >= 0 (0: no warning signal)")
        require(self.max_requeues >= 0, f"{prefix}max_requeues", "must be >= 0")
        require(bool(self.log_dir), f"{prefix}log_dir", "give a directory for the job logs")


@dataclass
class SlurmArrayProfile(SlurmProfile):
    """The ``slurm:`` section of data prep and tokenize (``executor: slurm``): a ``SlurmProfile`` for one
    job array per stage, one element per pending task, plus what only an array needs. Its defaults
    differ where an array differs from a training run: no time limit of its own, no warning signal and
    no requeue, because a rerun skips the tasks that left a completion marker."""

    time: str = ""
    """Per-element wall-clock limit (``30``, ``2:00:00``, ``1-00:00:00``); empty: the partition's default."""
    signal_seconds: int = 0
    max_requeues: int = 0
    log_dir: str = "logs"
    """Where each element's ``<job name>-<job id>_<i>.out`` goes; a relative path is taken from the
    executor's work directory (``<output>/slurm``), not from where lmpipe runs."""
    max_parallel: int = 0
    """Most elements running at once (the ``%P`` of ``--array=0-K%P``); 0: no cap."""
    job_name: str = "lmpipe"
    """Each stage's array is named ``<job_name>-<stage>`` (lmpipe-prep, lmpipe-cluster, lmpipe-dedup)."""
    poll_seconds: float = 5.0
    """Seconds between job-state polls while the arrays run."""
    timeout_minutes: float = 0.0
    """Cancel the arrays and fail if they run longer than this; 0: wait as long as it takes."""

    def check(self, prefix: str) -> None:
        super().check(prefix)
        # An element execs its task on the batch node: no srun step, no container, no checkpoint.
        require(self.nodes == 1, f"{prefix}nodes", "an array element is one task on one node: leave it 1")
        require(self.tasks_per_node == 1, f"{prefix}tasks_per_node", "one task per element: leave it 1")
        require(not self.container.image, f"{prefix}container.image", "array elements run outside containers")
        require(
            self.signal_seconds == 0,
            f"{prefix}signal_seconds",
            "array tasks do not checkpoint on a warning; leave it 0 (a rerun skips finished tasks)",
        )
        require(self.max_parallel >= 0, f"{prefix}max_parallel", "must be >= 0 (0: no cap)")
        require(bool(self.job_name.strip()), f"{prefix}job_name", "must not be empty")
        require(self.poll_seconds > 0, f"{prefix}poll_seconds", "must be > 0")
        require(self.timeout_minutes >= 0, f"{prefix}timeout_minutes", "must be >= 0 (0: no limit)")


def _fields(profile: SlurmProfile) -> list[str]:
    return [f.name for f in fields(profile)]
