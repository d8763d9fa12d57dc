"""MLflow tracking of a training job: one run, logged from rank 0 only.

A ``Tracker`` on any other rank, or with ``tracking.enabled: false``, does nothing, so
the loop calls it unconditionally. Params are the flattened job config; tags carry the
scaling-law coordinates: N (non-embedding params), D (tokens seen) and C = 6ND.

Metrics go through a queue to a background thread that sends them about once a second in
``log_batch`` calls of at most 1000, so a training step never waits on the tracking store
(a server's round trip, a sqlite commit); ``flush()`` and ``finish()`` wait for the queue to
drain, so nothing logged is lost at the end of a job or on a preemption. A store that is down
is retried; what it has not taken by the end is kept in ``<output_dir>/mlflow_unsent.jsonl``
for ``lmpipe tracking replay`` (``Tracker``; tests/faults).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import TrackingConfig
from pipeline.core.errors import MissingInputError

# MLflow phones home unless told not to; nothing here should need the network.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow retries a request 7 times over minutes by default; the sender retries on its own, and the few
# synchronous calls (tags, artifacts, the final status) must not hold a job's end for minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

_REMOTE_SCHEMES = ("http://", "https://", "databricks")
# MLflow's limits (mlflow.utils.validation): per log_batch call, and on keys and values.
MAX_PARAMS_PER_BATCH, MAX_METRICS_PER_BATCH = 100, 1000
MAX_KEY_LENGTH, MAX_PARAM_LENGTH, MAX_TAG_LENGTH = 250, 6000, 8000
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")
SEND_EVERY_S = 1.0
"""The sender gathers this long after the first queued log before it writes: fewer, larger ``log_batch``
calls, whose per-call work (Python, holding the GIL) would otherwise slow the training thread."""
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""Without it the MLflow UI (3.x) opens an experiment in its GenAI view (traces, prompts); with it,
in its model-training view: the runs table and metric charts."""
RETRY_S = 5.0
"""While the store fails, the sender tries again this often."""
UNSENT_FILE = "mlflow_unsent.jsonl"


class TrackingUnsent(RuntimeError):
    """What the MLflow store did not take by the end of a flush; the message names the file it was
    kept in (``lmpipe tracking replay FILE`` sends it), and the job reports it as a warning."""


class Tracker:
    """One MLflow run; every method is a no-op when ``run_id`` is None (off, or not rank 0).

    A store that stops answering (a server down, a network cut) never stops training: metrics stay
    queued and go out once it answers again (one warning line each way). What a flush at the end of
    the job (or a preemption) cannot send within ``flush_timeout_s`` (metrics, and tags, artifacts and
    the run's status that failed) is appended to ``unsent_file`` as JSON lines for ``replay_unsent``."""

    def __init__(
        self,
        client: Any = None,
        run_id: str | None = None,
        *,
        system_metrics: bool = False,
        unsent_file: Path | None = None,
        flush_timeout_s: float = 60.0,
    ):
        self.client, self.run_id = client, run_id
        self.system_metrics = system_metrics
        """Whether the loop should add ``memory_metrics`` to its logs (``tracking.system_metrics``)."""
        self.unsent_file, self.flush_timeout_s = unsent_file, flush_timeout_s
        self._queue: queue.Queue = queue.Queue()
        self._sender: threading.Thread | None = None
        self._backlog: list[tuple] = []
        """Metrics taken from the queue and not sent yet (the sender's; a flush takes it when it gives up)."""
        self._unsent: list[dict[str, Any]] = []
        """Other operations that failed, kept for the unsent file."""
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._attempts = 0
        """Send attempts that failed so far: a flush waits for at most one more."""

    @classmethod
    def start(
        cls,
        cfg: TrackingConfig,
        *,
        output_dir: str | Path,
        params: dict[str, str],
        tags: Mapping[str, str | int],
        active: bool = True,
        run_id: str | None = None,
    ) -> Tracker:
        """Open the run (or re-attach to ``run_id``) and log params
        and tags; ``active=False`` on ranks other than 0."""
        if not (cfg.enabled and active):
            return cls()
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
        client = MlflowClient(tracking_uri=cfg.resolve_uri(str(output_dir)))
        if run_id is None:
            experiment_id = find_experiment_id(
                client, cfg.experiment, output_dir, cfg.resolve_uri(str(output_dir))
            )
            parent = {"mlflow.parentRunId": cfg.parent_run_id} if cfg.parent_run_id else None
            run_id = client.create_run(experiment_id, run_name=cfg.run_name or None, tags=parent).info.run_id
            items = [Param(mlflow_key(key), str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()]
            for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
                client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])
        else:  # a resumed job: the same run goes on
            client.update_run(run_id, status="RUNNING")
        tracker = cls(
            client,
            run_id,
            system_metrics=cfg.system_metrics,
            unsent_file=Path(output_dir) / UNSENT_FILE,
            flush_timeout_s=cfg.flush_timeout_s,
        )
        tracker.set_tags(tags)
        return tracker

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        """Queue ``metrics`` (None values, such as MFU on a CPU, are left out) and return at once."""
        if self.run_id is None:
            return
        if self._sender is None:
            self._sender = threading.Thread(target=self._send, name="mlflow-metrics", daemon=True)
            self._sender.start()
        now = int(time.time() * 1000)
        self._queue.put(
            [
                (mlflow_key(key), float(value), now, step)
                for key, value in metrics.items()
                if value is not None
            ]
        )

    def flush(self) -> None:
        """Wait until every queued metric is sent, at most ``flush_timeout_s`` and, once the store has
        failed, one more attempt; then raise ``TrackingUnsent`` if anything is left, kept in
        ``unsent_file``."""
        self._wait_until_sent()
        with self._lock:
            left = [{"op": "metrics", "metrics": list(self._backlog)}] if self._backlog else []
            left += self._unsent
            self._backlog, self._unsent = [], []
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, list) and item:
                    left.append({"op": "metrics", "metrics": item})
        if not left:
            return
        error = self._error
        kept = self._keep(left)
        raise TrackingUnsent(
            f"MLflow metric logging failed: {error}; {kept}"
            if error is not None
            else f"MLflow did not answer within {self.flush_timeout_s:g} s; {kept}"
        )

    def drain(self) -> None:
        """Wait until what is queued has been sent, unless the store is failing (then at once: training
        never waits on a store that is down). A checkpoint drains first, so a job killed after it has every
        metric up to its step in the store, and its resumed run's history has no gap."""
        if self._error is None:
            self._wait_until_sent()

    def _wait_until_sent(self) -> None:
        """Wait for the sender to take and send everything queued so far: at most ``flush_timeout_s``, and
        no longer than the store's next failure."""
        if self._sender is None:
            return
        done = threading.Event()
        self._queue.put(done)
        deadline, attempts = time.monotonic() + self.flush_timeout_s, self._attempts
        while not done.wait(0.05) and time.monotonic() < deadline:
            if self._attempts > attempts:
                break  # the store failed (again) since this wait began: waiting longer is guessing

    def _keep(self, operations: list[dict[str, Any]]) -> str:
        """Append ``operations`` to the unsent file; what to tell the user about them."""
        metrics = sum(len(op["metrics"]) for op in operations if op["op"] == "metrics")
        what = f"{metrics} metric value(s) and {len(operations)} operation(s) in all"
        if self.unsent_file is None:
            return f"{what} lost (no file to keep them in)"
        uri = getattr(self.client, "tracking_uri", "")
        with open(self.unsent_file, "a") as f:
            for op in operations:
                f.write(json.dumps({"uri": uri, "run_id": self.run_id, **op}) + "\n")
        return f"{what} kept in {self.unsent_file}; send them with: lmpipe tracking replay {self.unsent_file}"

    def _send(self) -> None:
        """The sender thread: what is queued within SEND_EVERY_S goes out in batches of <= 1000; while the
        store fails, the backlog is retried every RETRY_S and new metrics join it."""
        waiting: list[threading.Event] = []
        while True:
            try:
                items = [self._queue.get(timeout=RETRY_S if self._backlog else None)]
            except queue.Empty:
                items = []
            deadline = time.monotonic() + SEND_EVERY_S
            while items and not isinstance(items[-1], threading.Event):
                try:
                    items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            with self._lock:
                for item in items:
                    if isinstance(item, threading.Event):
                        waiting.append(item)
                    else:
                        self._backlog.extend(item)
            self._send_backlog()
            if not self._backlog:
                for event in waiting:
                    event.set()
                waiting = []

    def _send_backlog(self) -> None:
        from mlflow.entities import Metric

        while True:
            with self._lock:
                batch = self._backlog[:MAX_METRICS_PER_BATCH]
            if not batch:
                return
            try:
                self.client.log_batch(self.run_id, metrics=[Metric(*metric) for metric in batch])
            except Exception as exc:  # noqa: BLE001 - kept and retried; flush() reports what is left
                if self._error is None:
                    _warn(f"MLflow is not taking metrics ({exc}); training goes on, they are kept for later")
                self._error = exc
                self._attempts += 1
                return
            with self._lock:
                if self._backlog[: len(batch)] == batch:  # a flush that gave up may have taken them
                    del self._backlog[: len(batch)]
            if self._error is not None:
                _warn("MLflow answers again; the metrics kept meanwhile are being sent")
                self._error = None

    def _call(self, op: dict[str, Any], call: Callable[[], Any]) -> None:
        """A store call other than metrics, synchronous (MLflow's own retries bound it: module top); when it
        fails, ``op`` is kept for the unsent file instead of failing the job."""
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - reported with the unsent metrics
            self._error = self._error or exc
            with self._lock:
                self._unsent.append(op)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import RunTag

        items = {mlflow_key(key): str(value)[:MAX_TAG_LENGTH] for key, value in tags.items()}
        self._call(
            {"op": "tags", "tags": items},
            lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in items.items()]),
        )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifacts (a local dir for sqlite, uploaded to a server's store)."""
        if self.run_id is not None:
            self._call(
                {"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path},
                lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
            )

    @contextlib.contextmanager
    def failing_on_error(self, keep_open: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """Mark the run FAILED (KILLED on Ctrl-C) if the block raises, so the UI does not show it running;
        ``keep_open`` exceptions leave it running (a preempted job that a requeue continues). Either way
        the queued metrics are sent first."""
        try:
            yield
        except keep_open:
            with contextlib.suppress(Exception):
                self.flush()
            raise
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the training error is the one to report, not MLflow's
                self.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise

    def finish(self, status: str = "FINISHED", *, artifacts: tuple[str | Path, ...] = ()) -> None:
        """Send the queued metrics, log those of ``artifacts`` that exist (result.json), close the run;
        ``TrackingUnsent`` (after all that) if the store did not take everything."""
        if self.run_id is None:
            return
        unsent: TrackingUnsent | None = None
        try:
            self.flush()
        except TrackingUnsent as exc:
            unsent = exc
        for path in artifacts:
            if Path(path).is_file():
                self.log_artifact(path)
        self._call(
            {"op": "terminated", "status": status},
            lambda: self.client.set_terminated(self.run_id, status=status),
        )
        if self._unsent:  # the tags, artifacts or status just tried
            try:
                self.flush()
            except TrackingUnsent as exc:
                unsent = unsent or exc
        if unsent is not None:
            raise unsent


def replay_unsent(path: str | Path) -> int:
    """Send what a ``Tracker`` kept in ``path`` (its unsent file) to the runs it names, in order; returns the
    number of operations. Metrics carry their original timestamps, which MLflow's store deduplicates on, so
    replaying twice logs nothing twice. The file is renamed ``<path>.replayed`` once everything is sent."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"no such file: {path}")
    operations = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    clients: dict[str, Any] = {}
    for op in operations:
        client = clients.setdefault(op["uri"], MlflowClient(tracking_uri=op["uri"] or None))
        if op["op"] == "metrics":
            metrics = [Metric(*metric) for metric in op["metrics"]]
            for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                client.log_batch(op["run_id"], metrics=metrics[start : start + MAX_METRICS_PER_BATCH])
        elif op["op"] == "tags":
            client.log_batch(op["run_id"], tags=[RunTag(k, v) for k, v in op["tags"].items()])
        elif op["op"] == "artifact" and Path(op["path"]).is_file():
            client.log_artifact(op["run_id"], op["path"], op["artifact_path"])
        elif op["op"] == "terminated":
            client.set_terminated(op["run_id"], status=op["status"])
    path.rename(path.with_name(path.name + ".replayed"))
    return len(operations)


def _warn(message: str) -> None:
    """One warning line on stderr (a tracker is active on rank 0 only)."""
    print(f"lmpipe: warning: {message}", file=sys.stderr, flush=True)


def mlflow_key(key: str) -> str:
    """``key`` as MLflow accepts it: characters it rejects become ``_``, cut to 250 characters."""
    return _BAD_KEY_CHARS.sub("_", key)[:MAX_KEY_LENGTH]


def scaling_tags(*, n_params: int, tokens_seen: int) -> dict[str, int]:
    """N, D and the training compute C = 6ND (Kaplan et al.) of a run."""
    return {"N": n_params, "D": tokens_seen, "C": 6 * n_params * tokens_seen}


def model_size_tag(model: ModelConfig) -> dict[str, str]:
    """The ladder rung the run trains, so a sweep's runs group by size; a rung whose shape the config
    overrides is named with its overrides (``14m+d_model=320``), not passed off as the rung."""
    overrides = [
        f"{name}={value}"
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads")
        if (value := getattr(model, name)) is not None
    ]
    return {"model_size": "+".join([model.size, *overrides])}


def memory_metrics(device: torch.device) -> dict[str, float]:
    """This process's resident memory and, on a GPU, the peak memory PyTorch allocated there (GiB).

    Read from /proc (the peak from getrusage elsewhere) rather than psutil, which is not a dependency.
    """
    try:
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    metrics = {"memory/rss_gb": rss / 2**30}
    if device.type == "cuda":
        metrics["memory/cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return metrics


def git_commit() -> str | None:
    """The commit of the checkout this code runs from, if it is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_experiment_id(client: Any, name: str, output_dir: str | Path, uri: str) -> str:
    """The experiment's id, creating it if new. Artifacts go under output_dir (with a sqlite store
    MLflow would otherwise put them in ./mlruns of whatever the cwd is), or to the server's store.
    The experiment is tagged as model training (``EXPERIMENT_KIND``), even one made before this tag was
    (unless it has a kind already)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = (
            None if uri.startswith(_REMOTE_SCHEMES) else (Path(output_dir).resolve() / "mlartifacts").as_uri()
        )
        try:
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except MlflowException:  # another job created it between our lookup and our create
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    for key, value in EXPERIMENT_KIND.items():
        if key not in experiment.tags:  # a kind someone chose in the UI stays
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id
