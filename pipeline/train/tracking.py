"""MLflow tracking of a training job: one run, logged from rank 0 only.

A ``Tracker`` on any other rank, or with ``tracking.enabled: false``, does nothing, so
the loop calls it unconditionally. Params are the flattened job config; tags carry the
scaling-law coordinates: N (non-embedding params), D (tokens seen) and C = 6ND.

Metrics go through a queue to a background thread that sends them about once a second in
``log_batch`` calls of at most 1000, so a training step never waits on the tracking store
(a server's round trip, a sqlite commit); ``flush()`` and ``finish()`` wait for the queue to
drain, so nothing logged is lost at the end of a job or on a preemption.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.config.model import ModelConfig
from pipeline.config.train import TrackingConfig

# MLflow phones home unless told not to; nothing here should need the network.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

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
_STOP = object()
log = logging.getLogger(__name__)


class Tracker:
    """One MLflow run; every method is a no-op when ``run_id`` is None (off, or not rank 0)."""

    def __init__(self, client: Any = None, run_id: str | None = None, *, system_metrics: bool = False):
        self.client, self.run_id = client, run_id
        self.system_metrics = system_metrics
        """Whether the loop should add ``memory_metrics`` to its logs (``tracking.system_metrics``)."""
        self._queue: queue.Queue = queue.Queue()
        self._sender: threading.Thread | None = None
        self._error: BaseException | None = None

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
        tracker = cls(client, run_id, system_metrics=cfg.system_metrics)
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
        """Wait until every queued metric is sent; raise the first error the sender met, if any."""
        if self._sender is not None:
            self._queue.put(_STOP)
            self._sender.join()
            self._sender = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"MLflow metric logging failed: {error}") from error

    def _send(self) -> None:
        """The sender thread: what is queued within SEND_EVERY_S
        (or until a flush) goes out in batches of <= 1000."""
        from mlflow.entities import Metric

        stop = False
        while not stop:
            items = [self._queue.get()]
            deadline = time.monotonic() + SEND_EVERY_S
            while items[-1] is not _STOP:
                try:
                    items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            stop = items[-1] is _STOP
            metrics = [Metric(*metric) for item in items if item is not _STOP for metric in item]
            for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                if self._error is not None:  # the store is failing: drop the rest, flush() reports it
                    break
                try:
                    self.client.log_batch(self.run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])
                except Exception as exc:  # noqa: BLE001 - reported by flush() in the training thread
                    log.warning("MLflow metric logging failed: %s", exc)
                    self._error = exc

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import RunTag

        self.client.log_batch(
            self.run_id,
            tags=[RunTag(mlflow_key(key), str(value)[:MAX_TAG_LENGTH]) for key, value in tags.items()],
        )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifacts (a local dir for sqlite, uploaded to a server's store)."""
        if self.run_id is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

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
        """Send the queued metrics, log those of ``artifacts`` that exist (result.json), close the run."""
        if self.run_id is None:
            return
        try:
            self.flush()
            for path in artifacts:
                if Path(path).is_file():
                    self.log_artifact(path)
        finally:
            self.client.set_terminated(self.run_id, status=status)


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
