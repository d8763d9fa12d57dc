"""Run a function in real processes joined by a real process group (gloo on CPU).

    def check_allreduce(scale):
        t = torch.ones(1) * scale
        dist.all_reduce(t)
        return t.item()

    assert run_distributed_test(check_allreduce, world_size=2, scale=3.0) == [6.0, 6.0]

``func`` must be importable (a module-level function): the workers are new processes. Each worker
sees the caller's environment and working directory plus the torchrun variables (RANK, WORLD_SIZE,
MASTER_ADDR/PORT, ...), so code that calls ``pipeline.distributed.init_distributed()`` joins the group
as under torchrun.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from data_prep.tokenizer.config import TokenizeConfig, TokenizerTrainConfig
from data_prep.tokenizer.manifest import build_manifest, write_manifest
from data_prep.tokenizer.shards import SHARDS_SUBDIR, ShardWriter, token_dtype
from data_prep.tokenizer.tokenize import tokenize
from data_prep.tokenizer.train import train_tokenizer
from pipeline.core.files import file_sha256
from pipeline.testing_ranks import Caller, adopt_caller, exit_without_finalizing, forkserver_caller
from pipeline.train.checkpoint import newest_checkpoint

SHARED_FIXTURES = Path(
    os.environ.get("LMPIPE_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures")
)
"""The real Common Crawl / Wikipedia files: ../shared/fixtures beside the checkout (where CI puts them
too), or wherever LMPIPE_FIXTURES points."""

SHARED_CORPORA = Path(
    os.environ.get("LMPIPE_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora")
)
"""The real books for training and sweeps: ../shared/corpora beside the checkout, or LMPIPE_CORPORA."""


def in_ci() -> bool:
    """``CI=true`` (or 1/yes): what a local run may skip, CI must have."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> NoReturn:
    """``pytest.skip(reason)``, or under CI ``pytest.fail(reason)``: a missing dependency or fixture
    must not turn a CI run green by skipping the tests that need it."""
    import pytest  # a dev dependency: only the tests call this

    if in_ci():
        pytest.fail(f"{reason} (CI=true: required, not skipped)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> Any:
    """``pytest.importorskip(name)`` that fails under CI: the module, imported."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(f"could not import {name!r}: {exc}")


def require_fixture(relative: str | Path, root: Path = SHARED_FIXTURES) -> Path:
    """A file or directory under ``root`` (the shared fixtures, or :data:`SHARED_CORPORA`); skips without
    it (fails under CI)."""
    path = root / relative
    if not path.exists():
        skip_or_fail(f"shared fixture {path} not present")
    return path


def run_distributed_test(
    func: Callable[..., Any],
    world_size: int = 2,
    backend: str = "gloo",
    *,
    start_method: str = "forkserver",
    timeout_s: float = 120.0,
    **kwargs: Any,
) -> list[Any]:
    """Call ``func(**kwargs)`` on ``world_size`` ranks; return each rank's return value, by rank.

    An exception in any rank is raised here with that rank's traceback. ``start_method`` "forkserver"
    (default) forks each rank from a server that imported ``testing_ranks.FORKSERVER_PRELOAD`` once per
    calling process: the suite starts ~100 ranks, and importing torch in each was most of their CPU time.
    "spawn" starts a fresh interpreter per rank: for CUDA ranks, which a process must initialise itself.
    """
    caller = forkserver_caller()
    with tempfile.TemporaryDirectory(prefix="lmpipe-dist-") as tmp:
        mp.start_processes(
            _worker,
            args=(func, world_size, backend, free_port(), timeout_s, tmp, kwargs, caller),
            nprocs=world_size,
            start_method=start_method,
            join=True,
        )
        return [pickle.loads((Path(tmp) / f"rank{rank}.pkl").read_bytes()) for rank in range(world_size)]


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(
    rank: int,
    func: Callable[..., Any],
    world_size: int,
    backend: str,
    port: int,
    timeout_s: float,
    result_dir: str,
    kwargs: dict[str, Any],
    caller: Caller,
) -> None:
    adopt_caller(caller, rank, world_size, port)
    # As torchrun does: the ranks share the cores instead of each taking all of them, unless the caller
    # set the count (OMP_NUM_THREADS), as torchrun honours it too.
    threads = os.environ.get("OMP_NUM_THREADS") or (os.cpu_count() or 1) // world_size
    torch.set_num_threads(max(1, int(threads)))
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    try:
        result = func(**kwargs)
    finally:
        dist.destroy_process_group()
    (Path(result_dir) / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    exit_without_finalizing()


def make_tiny_corpus(
    root: str | Path, *, docs: int = 400, sft_records: int = 300, vocab_size: int = 512, seed: int = 0
) -> tuple[Path, Path]:
    """Token shards (train/val) and an SFT JSONL of templated facts, small enough for CPU tests.

    Returns ``(shards_dir, sft_jsonl)``; built through the real tokenizer and tokenize stages.
    """
    root, rng = Path(root), random.Random(seed)
    towns = [
        f"{a}{b}" for a in ("Bran", "Kel", "Mor", "Stav", "Tull") for b in ("ford", "holt", "wick", "mere")
    ]
    facts = {
        town: (
            rng.choice(["Amber", "Grey", "Lorn", "Vell"]),
            rng.choice(["wool", "glass", "cheese", "paper"]),
        )
        for town in towns
    }

    def sentence(town: str) -> str:
        river, trade = facts[town]
        return rng.choice(
            [
                f"{town} lies on the river {river}. ",
                f"{town} is known for its {trade}. ",
                f"The people of {town} make {trade} by the {river}. ",
            ]
        )

    texts = ["".join(sentence(rng.choice(towns)) for _ in range(rng.randint(2, 8))) for _ in range(docs)]
    _tokenize_texts(root, texts, vocab_size)
    sft = root / "sft.jsonl"
    with sft.open("w") as f:
        for _ in range(sft_records):
            town = rng.choice(towns)
            river, trade = facts[town]
            record = rng.choice(
                [
                    {"prompt": f"Which river is {town} on?", "response": f"The river {river}."},
                    {"prompt": f"What is {town} known for?", "response": f"Its {trade}."},
                ]
            )
            f.write(json.dumps(record) + "\n")
    return root / "shards", sft


def _tokenize_texts(root: Path, texts: list[str], vocab_size: int) -> None:
    """``texts`` as a prep output (root/docs), a tokenizer trained on it (root/tokenizer) and its
    shards (root/shards, 10% val)."""
    docs = len(texts)
    (root / "docs" / "docs").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "id": [f"doc-{i}" for i in range(docs)],
                "text": texts,
                "source": ["wiki"] * docs,
                "url": [""] * docs,
                "metadata": ["{}"] * docs,
            }
        ),
        root / "docs" / "docs" / "00000-00000.parquet",
    )
    train_tokenizer(
        TokenizerTrainConfig(input=str(root / "docs"), output=str(root / "tokenizer"), vocab_size=vocab_size)
    )
    tokenize(
        TokenizeConfig(
            input=[str(root / "docs")],
            tokenizer=str(root / "tokenizer"),
            output=str(root / "shards"),
            val_fraction=0.1,
        )
    )


def write_random_shards(
    root: str | Path,
    docs_by_split: dict[str, list[int]],
    *,
    vocab_size: int = 300,
    sources: tuple[str, ...] = ("cc", "wiki"),
    shard_size_bytes: int = 200,
    seed: int = 0,
) -> dict[tuple[str, str], Any]:
    """Shards of random token ids through the real ShardWriter, plus manifest.json and a stand-in
    tokenizer.json; no tokenizer training, so any size is quick.

    Each split's documents (given by length) are dealt to ``sources`` in consecutive runs, so a
    source's shard series is a slice of its split. Returns ``{(split, source): (tokens, lengths)}``
    with the flat uint16/uint32 stream and the document lengths of each.
    """
    root, rng = Path(root), np.random.default_rng(seed)
    dtype = token_dtype(vocab_size)
    (root / SHARDS_SUBDIR).mkdir(parents=True, exist_ok=True)
    tokenizer_file = root / "tokenizer.json"
    tokenizer_file.write_text('{"stand-in": true}\n')
    streams, entries = {}, []
    for split, lengths in docs_by_split.items():
        for source, docs in zip(sources, np.array_split(np.asarray(lengths, dtype=np.int64), len(sources))):
            tokens = rng.integers(0, vocab_size, int(docs.sum())).astype(dtype)
            writer = ShardWriter(
                root, split=split, source=source, task=0, dtype=dtype, shard_size_bytes=shard_size_bytes
            )
            writer.add(tokens, docs)
            entries += writer.close()
            streams[(split, source)] = (tokens, docs)
    tokenizer = {
        "path": tokenizer_file.name,
        "sha256": file_sha256(tokenizer_file),
        "vocab_size": vocab_size,
        "eos_id": 1,
        "bos_id": 0,
        "pad_id": 2,
    }
    write_manifest(
        root,
        build_manifest(
            tokenizer=tokenizer, dtype=str(dtype), shards=entries, config={}, command="write_random_shards"
        ),
    )
    return streams


def signal_after_first_checkpoint(output_dir: str | Path, timeout_s: float = 60.0) -> threading.Thread:
    """SIGTERM this process once ``output_dir`` has its first complete checkpoint, as Slurm would before
    a time limit; the job under test runs in this process's main thread."""

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and newest_checkpoint(output_dir) is None:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 over a sqlite store under ``root``, in a process group of
    its own: ``start()`` waits for ``/health``; ``kill()`` SIGKILLs it (a crash, not a shutdown), and a
    later ``start()`` brings it back on the same port and store. One worker and no job runner: ~10 s to
    start instead of ~23 s (PLATFORM.md §5)."""

    def __init__(self, root: str | Path) -> None:
        self.root, self.port = Path(root), free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        mlflow = Path(sys.executable).with_name("mlflow")
        command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{self.root / 'server.db'}"]
        command += ["--artifacts-destination", str(self.root / "artifacts")]
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mlflow server did not start: {(self.root / 'server.log').read_text()}")
            time.sleep(0.5)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def kill(self) -> None:
        """SIGKILL the server and its workers (its process group)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def descendants(pid: int, **environ: str) -> list[int]:
    """The living processes below ``pid`` (children, theirs, ...), parents first, whose environment holds
    every ``environ`` item (e.g. ``LOCAL_RANK="1"``: how a test finds one rank). Read from /proc, since
    a process-group kill misses what torchrun starts: it gives every rank a session of its own."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[0] not in "ZX":
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    wanted = [f"{key}={value}".encode() for key, value in environ.items()]
    return [p for p in found if not wanted or all(item in _environ(p) for item in wanted)]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that can still run (not gone, not a zombie)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in "ZX"


def kill_tree(pid: int, *, including_root: bool = True, timeout_s: float = 10.0) -> None:
    """SIGKILL ``pid`` (unless ``including_root`` is False) and every process below it at one moment, as
    a lost node would: all are stopped first (parents first, so none starts another meanwhile), then
    killed; returns once none can run any more. The calling process, if among them, dies last."""
    me, stopped = os.getpid(), list[int]()
    # Asked now, not at the end: once the processes between ``pid`` and this one are killed, the /proc
    # parent chain that makes it a descendant is gone, and it would go on running.
    kill_me = me == pid and including_root or me in descendants(pid)
    while new := [
        p for p in [pid] * including_root + descendants(pid) if p not in stopped and p != me and alive(p)
    ]:
        for victim in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGSTOP)
            stopped.append(victim)
    for victim in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in stopped) and time.monotonic() < deadline:
        time.sleep(0.01)
    if kill_me:
        os.kill(me, signal.SIGKILL)


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after "pid (comm) ": state, ppid, pgrp, session, ...; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []
