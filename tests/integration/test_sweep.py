"""A micro sweep end to end: plan -> run (stopped after 2 runs, then resumed) -> one MLflow parent with
every training run as its child -> compare lists them -> plots written; and its Slurm job array rendered."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.testing import make_tiny_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, Path]:
    """(sweep config, its root): 2 sizes x 2 token budgets of a few steps each on the tiny corpus."""
    work = tmp_path_factory.mktemp("sweep")
    shards, _ = make_tiny_corpus(work / "corpus", docs=200, sft_records=10)
    root = work / "root"
    config = work / "sweep.yaml"
    config.write_text(f"""
name: micro
overrides: [data.shards={shards}, model.seq_len=32, train.micro_batch_size=4, train.eval_interval=0,
            train.log_interval=2, data.val_windows=4, checkpoint.interval=0, tracking.system_metrics=false]
models:
  - {{name: s, d_model: 32, n_layers: 1, n_heads: 2}}
  - {{name: m, d_model: 64, n_layers: 1, n_heads: 2}}
tokens: [1024, 2048]
global_batch_size: 8
root: {root}
""")
    return config, root


def _runs(root: Path) -> dict[str, tuple[str, int]]:
    """run name -> (MLflow run id, result.json mtime in ns) of every finished run."""
    out = {}
    for result in sorted(root.glob("runs/*/result.json")):
        out[result.parent.name] = (json.loads(result.read_text())["mlflow_run_id"], result.stat().st_mtime_ns)
    return out


def test_sweep_plan_run_resume_compare_plot(sweep, capsys):
    config, root = sweep
    assert main(["sweep", "plan", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "4 runs" in table and (root / "plan.csv").is_file()
    plan = json.loads((root / "plan.json").read_text())["runs"]
    assert [run["name"] for run in plan] == ["s-d1.02k", "s-d2.05k", "m-d1.02k", "m-d2.05k"]
    assert all(run["D"] % (8 * 32) == 0 for run in plan)

    # interrupted: two runs, then stop
    assert main(["sweep", "run", "--config", str(config), "--max-runs", "2"]) == 0
    first = _runs(root)
    assert sorted(first) == ["s-d1.02k", "s-d2.05k"]
    parent = json.loads((root / "sweep.json").read_text())["parent_run_id"]

    # resumed: the finished runs are not run again
    assert main(["sweep", "run", "--config", str(config)]) == 0
    assert "2 of 4 runs already finished" in capsys.readouterr().out
    second = _runs(root)
    assert len(second) == 4 and {name: second[name] for name in first} == first
    assert json.loads((root / "sweep.json").read_text())["parent_run_id"] == parent
    for run in plan:  # trained exactly as planned: the N, D (and so C) the fit uses are the plan's
        result = json.loads((root / "runs" / run["name"] / "result.json").read_text())
        assert (result["n_params"], result["tokens_seen"]) == (run["N"], run["D"])

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root.resolve()}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("micro")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(run.info.run_id for run in children) == sorted(run_id for run_id, _ in second.values())
    assert all(run.info.status == "FINISHED" for run in children)
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert set(parent_run.data.metrics) >= {f"final_val_loss/{name}" for name in second}
    artifacts = {a.path for folder in (None, "plots") for a in client.list_artifacts(parent, folder)}
    assert {"plan.json", "plan.csv", "results.json", "plots/loss_vs_compute.png"} <= artifacts

    assert main(["sweep", "compare", "--experiment", "micro", "--tracking-uri", uri]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in second)

    plots = {path.name for path in (root / "plots").glob("*.png")}
    assert {"loss_vs_compute.png", "loss_vs_tokens.png", "train_val_gap.png"} <= plots

    # nothing left: a rerun trains nothing and changes no run
    assert main(["sweep", "run", "--config", str(config)]) == 0
    assert _runs(root) == second


def test_sweep_slurm_array_dry_run(sweep, capsys, tmp_path):
    config, root = sweep
    profile = Path(__file__).resolve().parents[2] / "configs" / "slurm" / "local.yaml"
    out_root = tmp_path / "fresh"  # no finished runs here: every run is an element
    assert (
        main(
            [
                "sweep",
                "run",
                "--config",
                str(config),
                f"root={out_root}",
                "--slurm",
                str(profile),
                "--max-parallel",
                "2",
                "--dry-run",
            ]
        )
        == 0
    )
    script = capsys.readouterr().out
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --job-name=sweep-micro" in script
    configs = sorted(str(path.resolve()) for path in (out_root / "runs").glob("*/config.yaml"))
    assert len(configs) == 4 and all(path in script for path in configs)
    assert not (out_root / "sweep.json").exists()  # a dry run makes no MLflow parent
    script_file = tmp_path / "sweep.sbatch"
    script_file.write_text(script)
    assert subprocess.run(["bash", "-n", str(script_file)], check=False).returncode == 0


def test_sweep_slurm_submission_is_refused_when_slurm_could_not_write_its_logs(sweep, capsys, tmp_path):
    """Slurm fails every element at once, with no log, when --output's directory cannot be made; the
    sweep checks the profile as `lmpipe launch slurm` does and submits nothing."""
    config, _ = sweep
    profile = Path(__file__).resolve().parents[2] / "configs" / "slurm" / "local.yaml"
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    out_root = tmp_path / "fresh"
    args = ["sweep", "run", "--config", str(config), f"root={out_root}", "--slurm", str(profile)]
    assert main([*args, "--set", f"log_dir={blocker / 'logs'}"]) != 0
    error = capsys.readouterr().err
    assert "cannot submit the sweep" in error and f"log_dir {blocker / 'logs'} is not writable" in error
    assert not (out_root / "sweep-micro.sbatch").exists()
