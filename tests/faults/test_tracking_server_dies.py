"""Kill the real ``mlflow server`` (SIGKILL) while a job logs to it: training goes on at its own pace
and ends with a warning instead of an error, what the server could not take is kept in
``mlflow_unsent.jsonl``, and ``lmpipe tracking replay`` sends it once the server is back: every step's
metrics in MLflow once, the run FINISHED, nothing lost, nothing duplicated (replaying twice changes
nothing)."""

from __future__ import annotations

import time

import pytest
from faultjobs import Job, train_command

from pipeline.cli.main import main
from pipeline.testing import MlflowServer, require_module
from pipeline.train.tracking import UNSENT_FILE

pytestmark = [pytest.mark.faults, pytest.mark.slow]

STEPS = 80
END_BOUND_S = 45
"""From the kill to the job's end: the rest of its steps plus a bounded wait on the dead store."""


def test_training_outlives_its_tracking_server_and_replay_fills_the_gap(tiny_corpus, tmp_path, capsys):
    MlflowClient = require_module("mlflow.tracking").MlflowClient  # noqa: N806 (a class)
    server = MlflowServer(tmp_path / "server").start()
    output = tmp_path / "run"
    try:
        job = Job.start(
            train_command(1, tiny_corpus[0], output, f"train.max_steps={STEPS}", "tracking.enabled=true")
            + [f"tracking.uri={server.uri}", "tracking.flush_timeout_s=10"],
            tmp_path / "job.log",
        )
        assert job.wait_for(r"train step\s+3/"), job.output[-3000:]
        server.kill()
        killed = time.monotonic()
        assert job.wait() == 0, job.output[-3000:]
        assert time.monotonic() - killed < END_BOUND_S
        log = job.output
        assert f"train step    {STEPS}/{STEPS}" in log  # every step taken
        warnings = [line for line in log.splitlines() if line.startswith("lmpipe: warning:")]
        assert warnings[0].startswith("lmpipe: warning: MLflow is not taking metrics")
        assert f"lmpipe tracking replay {output / UNSENT_FILE}" in warnings[-1]
        assert len(warnings) == 2, warnings

        server.start()
        assert main(["tracking", "replay", str(output / UNSENT_FILE)]) == 0
        replayed = output / f"{UNSENT_FILE}.replayed"
        assert replayed.is_file() and not (output / UNSENT_FILE).exists()
        assert main(["tracking", "replay", str(replayed)]) == 0  # again: nothing twice
        capsys.readouterr()

        client = MlflowClient(tracking_uri=server.uri)
        (run,) = client.search_runs([client.get_experiment_by_name("lmpipe").experiment_id])
        assert run.info.status == "FINISHED"
        history = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert history == list(range(1, STEPS + 1))  # each step once: nothing lost, nothing twice
        assert {"N", "D", "C"} <= set(run.data.tags)
        assert "result.json" in [a.path for a in client.list_artifacts(run.info.run_id)]
    finally:
        server.kill()
