"""MLflow tracking of a training job: one run, logged from rank 0 only.

A ``Tracker`` on any other rank, or with ``tracking.enabled: false``, does nothing, so
the loop calls it unconditionally. Params are the flattened job config; tags carry the
scaling-law coordinates: N (non-embedding params), D (tokens seen) and C = 6ND.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.job_config import TrackingConfig

# MLflow phones home unless told not to; nothing here should need the network.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

_REMOTE_SCHEMES = ("http://", "https://", "databricks")


class Tracker:
    """One MLflow run; every method is a no-op when ``run_id`` is None (off, or not rank 0)."""

    def __init__(self, client: Any = None, run_id: str | None = None):
        self.client, self.run_id = client, run_id

    @classmethod
    def start(cls, cfg: TrackingConfig, *, output_dir: str | Path, params: dict[str, str], tags: dict[str, str],
              active: bool = True, run_id: str | None = None) -> Tracker:
        """Open the run (or re-attach to ``run_id``) and log params and tags; ``active=False`` on ranks > 0."""
        if not (cfg.enabled and active):
            return cls()
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
        client = MlflowClient(tracking_uri=cfg.resolve_uri(str(output_dir)))
        if run_id is None:
            experiment_id = _experiment_id(client, cfg.experiment, output_dir, cfg.resolve_uri(str(output_dir)))
            run_id = client.create_run(experiment_id, run_name=cfg.run_name or None).info.run_id
            items = [Param(key, value[:6000]) for key, value in params.items()]
            for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(run_id, params=items[start:start + 100])
        else:  # a resumed job: the same run goes on
            client.update_run(run_id, status="RUNNING")
        tracker = cls(client, run_id)
        tracker.set_tags(tags)
        return tracker

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, step)
                                                    for key, value in metrics.items()])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    @contextlib.contextmanager
    def failing_on_error(self, keep_open: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """Mark the run FAILED (KILLED on Ctrl-C) if the block raises, so the UI does not show it running;
        ``keep_open`` exceptions leave it running (a preempted job that a requeue continues)."""
        try:
            yield
        except keep_open:
            raise
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the training error is the one to report, not MLflow's
                self.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def scaling_tags(*, n_params: int, tokens_seen: int) -> dict[str, int]:
    """N, D and the training compute C = 6ND (Kaplan et al.) of a run."""
    return {"N": n_params, "D": tokens_seen, "C": 6 * n_params * tokens_seen}


def git_commit() -> str | None:
    """The commit of the checkout this code runs from, if it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _experiment_id(client: Any, name: str, output_dir: str | Path, uri: str) -> str:
    """The experiment's id, creating it if new. Artifacts go under output_dir (with a sqlite store
    MLflow would otherwise put them in ./mlruns of whatever the cwd is), or to the server's store."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if uri.startswith(_REMOTE_SCHEMES) else (Path(output_dir).resolve() / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another job created it between our lookup and our create
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
