"""Sweep planning (pipeline.scaling.plan): data sizes, rounding, the ladder's lr and batch rules, the
batch and lr axes and each point's best run over them, warmup, and one-line errors; only the slow tests
touch MLflow, nothing here trains."""

from __future__ import annotations

import csv
import json

import pytest

from data_prep.tokenizer.manifest import build_manifest, write_manifest
from pipeline.config.train import TrainJobConfig
from pipeline.core.errors import ConfigError
from pipeline.model.ladder import SIZES, default_batch_size, default_lr, rung
from pipeline.scaling.fit import FitOptions, InitGrid
from pipeline.scaling.outcome import RunOutcome
from pipeline.scaling.plan import SweepConfig, plan_sweep, write_plan
from pipeline.scaling.results import fitted_points, write_points_csv, write_runs_csv
from pipeline.scaling.run import ensure_parent_run, summarize
from pipeline.scaling.table import format_plan

BASE = [
    "name=t",
    "overrides=[data.shards=s,model.seq_len=64,train.micro_batch_size=4]",
    "models=[{name: a, d_model: 32, n_layers: 1, n_heads: 1},"
    " {name: b, d_model: 64, n_layers: 2, n_heads: 2}]",
]


def sweep(*overrides: str, tmp_path=None) -> SweepConfig:
    root = [f"root={tmp_path}"] if tmp_path else []
    return SweepConfig.load(None, [*BASE, *root, *overrides])


def n_of(d_model: int, n_layers: int, n_heads: int) -> int:
    return rung(d_model, n_layers, n_heads, n_heads).non_embedding_params()


def test_grid_of_tokens_rounds_each_run_to_whole_steps():
    plan = plan_sweep(sweep("tokens=[10000,50000]"))
    assert [run.name for run in plan.runs] == ["a-d10k", "a-d50k", "b-d10k", "b-d50k"]
    for run in plan.runs:
        step_tokens = run.global_batch_size * run.seq_len
        requested = 10000 if run.name.endswith("d10k") else 50000
        assert run.D == run.steps * step_tokens
        assert abs(run.D - requested) <= step_tokens / 2  # the nearest whole number of steps
        assert run.C == 6 * run.N * run.D
        config = plan.configs[run.name]
        assert config.train.max_tokens == run.D and config.train.schedule == "cosine"
        assert config.checkpoint.resume == "auto" and config.tracking.run_name == run.name


def test_runs_past_one_epoch_of_the_training_split_are_flagged(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    split_tokens = {
        "train-a.arrow": ("train", 30000),
        "train-b.arrow": ("train", 10000),
        "val.arrow": ("val", 99999),
    }
    for name in split_tokens:
        (shards / name).touch()
    write_manifest(
        shards,
        build_manifest(
            tokenizer={"path": "tokenizer.json", "sha256": "", "vocab_size": 512, "eos_id": 1},
            dtype="uint16",
            shards=[
                {"path": name, "split": split, "source": "web", "docs": 1, "tokens": tokens, "sha256": ""}
                for name, (split, tokens) in split_tokens.items()
            ],
            config={},
            command="test",
        ),
    )
    plan = plan_sweep(
        sweep(
            "tokens=[20000,80000]",
            f"overrides=[data.shards={shards},model.seq_len=64,train.micro_batch_size=4]",
            "global_batch_size=4",
        )
    )
    assert {run.name: run.epochs for run in plan.runs} == pytest.approx(
        {"a-d20k": 0.5, "a-d80k": 2.0, "b-d20k": 0.5, "b-d80k": 2.0}, rel=0.01
    )  # D / 40k train tokens
    table = format_plan(plan)
    assert [line.split()[8] for line in table.splitlines()[1:5]] == ["0.50", "2.00*", "0.50", "2.00*"]
    assert "* 2 run(s) repeat their data" in table
    assert plan_sweep(sweep("tokens=[20000]")).runs[0].epochs == 0.0  # no shards yet: unknown, not flagged


def test_tokens_per_param_scales_d_with_n():
    plan = plan_sweep(sweep("tokens_per_param=[20]"))
    for run in plan.runs:
        assert run.name.endswith("-x20")
        assert abs(run.D - 20 * run.N) <= run.global_batch_size * run.seq_len / 2
    assert plan.runs[0].N == n_of(32, 1, 1) and plan.runs[1].N == n_of(64, 2, 2)


def test_isoflop_gives_each_size_d_of_c_over_6n_and_skips_sizes_out_of_bounds():
    # D = C / 6N: a (N 16k) gets 101k and 1.01M tokens, b (N 107k) 15.6k and 156k
    plan = plan_sweep(sweep("compute=[1e10,1e11]", "min_tokens=20000", "max_tokens=200000"))
    assert [run.name for run in plan.runs] == ["a-c1e+10", "b-c1e+11"]
    assert [reason.split(":")[0] for reason in plan.skipped] == ["a at C=1e+11", "b at C=1e+10"]
    for run in plan.runs:
        assert run.C == pytest.approx(run.budget, rel=0.05)  # off only by the rounding to whole steps
    assert "skipped: a at C=1e+11: D=1.01e+06 is outside [2e+04, 2e+05]" in format_plan(plan)


def test_lr_and_batch_follow_the_ladder_rule_unless_given():
    plan = plan_sweep(sweep("tokens=[50000]"))
    for run in plan.runs:
        assert run.lr == pytest.approx(default_lr(run.N))
        assert run.global_batch_size == default_batch_size(run.N, 64)
        config = plan.configs[run.name]
        assert (
            config.train.micro_batch_size <= 4 and run.global_batch_size % config.train.micro_batch_size == 0
        )
    fixed = plan_sweep(sweep("tokens=[50000]", "lr=0.002", "global_batch_size=8"))
    assert {(run.lr, run.global_batch_size) for run in fixed.runs} == {(0.002, 8)}


def test_lr_multipliers_make_one_run_each():
    plan = plan_sweep(sweep("tokens=[50000]", "lr_multipliers=[0.5,1,2]", "models=[{name: 14m}]"))
    assert [run.name for run in plan.runs] == ["14m-d50k-lr0.5x", "14m-d50k-lr1x", "14m-d50k-lr2x"]
    rule = default_lr(SIZES["14m"].non_embedding_params())
    assert [run.lr for run in plan.runs] == pytest.approx([rule / 2, rule, 2 * rule])
    assert plan.configs["14m-d50k-lr1x"].model.size == "14m"


def test_a_model_can_take_its_own_lr_multipliers():
    """Larger models win at lower learning rates: a size may leave out the sweep's largest multiplier."""
    models = (
        "models=[{name: a, d_model: 32, n_layers: 1, n_heads: 1},"
        " {name: b, d_model: 64, n_layers: 2, n_heads: 2, lr_multipliers: [0.5]}]"
    )
    plan = plan_sweep(sweep("tokens=[50000]", "lr_multipliers=[0.5,1]", models))
    assert [run.name for run in plan.runs] == ["a-d50k-lr0.5x", "a-d50k-lr1x", "b-d50k-lr0.5x"]
    b = next(run for run in plan.runs if run.model == "b")
    assert b.lr == pytest.approx(default_lr(b.N) / 2)
    only_one = plan_sweep(sweep("tokens=[50000]", models.replace("[0.5]", "[0.5, 2]")))
    assert [run.name for run in only_one.runs] == ["a-d50k-lr1x", "b-d50k-lr0.5x", "b-d50k-lr2x"]


def test_batch_sizes_and_lr_multipliers_make_one_run_each_per_model_and_data_size():
    """Steps, warmup and micro batch follow each run's own batch; the names carry both axes."""
    plan = plan_sweep(sweep("tokens=[50000,100000]", "global_batch_sizes=[2,8]", "lr_multipliers=[0.5,1]"))
    assert [run.name for run in plan.runs if run.model == "a"] == [
        f"a-{data}-b{batch}-lr{m}x" for data in ("d50k", "d100k") for batch in (2, 8) for m in ("0.5", "1")
    ]
    assert len(plan.runs) == 16
    for run in plan.runs:
        batch = int(run.name.split("-b")[1].split("-")[0])
        requested = 50000 if "-d50k-" in run.name else 100000
        assert run.global_batch_size == batch and run.point == run.name.split("-")[1]
        assert run.steps == round(requested / (batch * 64)) and run.D == run.steps * batch * 64
        assert run.warmup_steps == min(round(run.N / (batch * 64)), int(0.1 * run.steps))
        train = plan.configs[run.name].train
        assert (train.global_batch_size, train.max_tokens, train.warmup_steps) == (
            batch,
            run.D,
            run.warmup_steps,
        )
        assert train.micro_batch_size == min(batch, 4)  # the base's 4, or all of a batch of 2
    a_small = [run for run in plan.runs if run.model == "a" and "-d50k-" in run.name]
    assert [run.D for run in a_small] == [50048, 50048, 50176, 50176]  # one point, D per batch's steps
    assert a_small[0].lr == pytest.approx(default_lr(a_small[0].N) / 2)


def test_a_model_can_take_its_own_batch_sizes():
    """Any list of more than one batch size names every run with its batch, as for lr multipliers."""
    models = (
        "models=[{name: a, d_model: 32, n_layers: 1, n_heads: 1},"
        " {name: b, d_model: 64, n_layers: 2, n_heads: 2, global_batch_sizes: [2, 16]}]"
    )
    plan = plan_sweep(sweep("tokens=[50000]", "global_batch_size=8", models))
    assert [(run.name, run.global_batch_size) for run in plan.runs] == [
        ("a-d50k-b8", 8),
        ("b-d50k-b2", 2),
        ("b-d50k-b16", 16),
    ]
    overridden = plan_sweep(sweep("tokens=[50000]", "global_batch_sizes=[2,8]", models))
    assert [run.name for run in overridden.runs] == ["a-d50k-b2", "a-d50k-b8", "b-d50k-b2", "b-d50k-b16"]


def test_one_batch_size_keeps_the_names_and_configs_of_a_sweep_without_the_axis():
    """Finished runs on disk stay found: neither ``global_batch_sizes: [8]`` nor a model's single batch adds
    a ``-b`` suffix, and the runs are those of ``global_batch_size: 8``."""
    single = plan_sweep(sweep("tokens=[50000]", "global_batch_size=8", "lr_multipliers=[0.5,1]"))
    as_list = plan_sweep(sweep("tokens=[50000]", "global_batch_sizes=[8]", "lr_multipliers=[0.5,1]"))
    assert [run.name for run in single.runs] == [
        "a-d50k-lr0.5x",
        "a-d50k-lr1x",
        "b-d50k-lr0.5x",
        "b-d50k-lr1x",
    ]
    assert as_list.runs == single.runs and as_list.configs == single.configs
    per_model = "models=[{name: a, d_model: 32, n_layers: 1, n_heads: 1, global_batch_sizes: [4]}]"
    assert [run.name for run in plan_sweep(sweep("tokens=[50000]", per_model)).runs] == ["a-d50k"]


def test_each_points_best_is_taken_over_batch_sizes_and_learning_rates(tmp_path):
    """A point's runs differ in D by the rounding to each batch's steps; its best is still one run of all
    of them, marked in runs.csv (``best_of_lr``) and alone in fit_points.csv."""
    cfg = sweep("tokens=[50000]", "global_batch_sizes=[2,8]", "lr_multipliers=[0.5,1]", tmp_path=tmp_path)
    plan = plan_sweep(cfg)
    best = {"a": "a-d50k-b2-lr1x", "b": "b-d50k-b8-lr0.5x"}
    outcomes = [
        RunOutcome(
            name=run.name,
            N=run.N,
            D=run.D,
            final_val_loss=4.0 if run.name == best[run.model] else 5.0 + 0.1 * index,
            last_train_loss=4.0,
            mlflow_run_id=None,
        )
        for index, run in enumerate(plan.runs)
    ]
    points = fitted_points(plan, outcomes)
    assert [o.name for o in points] == list(best.values())
    write_runs_csv(plan, outcomes, points, tmp_path / "runs.csv")
    write_points_csv(plan, points, tmp_path / "fit_points.csv")
    with (tmp_path / "runs.csv").open() as handle:
        runs = list(csv.DictReader(handle))
    assert {row["name"] for row in runs if row["best_of_lr"] == "true"} == set(best.values())
    assert {row["name"]: row["global_batch_size"] for row in runs}["a-d50k-b2-lr1x"] == "2"
    with (tmp_path / "fit_points.csv").open() as handle:
        assert [(row["name"], row["global_batch_size"]) for row in csv.DictReader(handle)] == [
            ("a-d50k-b2-lr1x", "2"),
            ("b-d50k-b8-lr0.5x", "8"),
        ]


def test_warmup_is_about_n_tokens_capped_at_a_fraction_of_the_run():
    long, short = plan_sweep(
        sweep(
            "tokens=[10000000,100000]",
            "models=[{name: b, d_model: 64, n_layers: 2, n_heads: 2}]",
            "global_batch_size=8",
        )
    ).runs
    step_tokens = 8 * 64
    assert long.warmup_steps == round(long.N / step_tokens)
    assert short.warmup_steps == int(0.1 * short.steps) < round(short.N / step_tokens)


def test_written_configs_load_as_train_configs(tmp_path):
    cfg = sweep("tokens=[10000]", tmp_path=tmp_path)
    plan = plan_sweep(cfg, parent_run_id="abc123")
    write_plan(plan, cfg.root_dir)
    for run in plan.runs:
        loaded = TrainJobConfig.load(run.config)
        assert loaded == plan.configs[run.name]
        assert loaded.tracking.parent_run_id == "abc123" and loaded.output_dir == str(
            tmp_path / "runs" / run.name
        )
        assert loaded.tracking.uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert [row["name"] for row in json.loads((tmp_path / "plan.json").read_text())["runs"]] == [
        run.name for run in plan.runs
    ]
    assert (tmp_path / "plan.csv").read_text().splitlines()[0].startswith("name,model,N,D,C")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["bogus=1", "tokens=[1]"], "unknown key 'bogus'"),
        (["tokens=[1]", "models=[{name: a, width: 3}]"], "unknown key 'width'"),
        (["tokens=[1000]", "compute=[1e9]"], "give the data sizes one way"),
        ([], "give the data sizes one way"),
        (["tokens=[1000]", "models=[{name: huge}]"], "'huge' is not a ladder size"),
        (["tokens=[1000]", "models=[{name: c, d_model: 64}]"], "needs d_model, n_layers and n_heads"),
        (["tokens=[1000]", "models=[{name: 14m}, {name: 14m}]"], "names must be unique"),
        (["tokens=[1000]", "lr_multipliers=[0]"], "lr_multipliers: every value must be > 0"),
        (["tokens=[1000]", "models=[{name: 14m, lr_multipliers: []}]"], "give at least one, each > 0"),
        (["tokens=[1000]", "tokens_per_s={zz: 1}"], "zz is not a model of the sweep"),
        (["tokens=[1000]", "global_batch_sizes=[8,0]"], "global_batch_sizes: every value must be > 0"),
        (["tokens=[1000]", "global_batch_size=8", "global_batch_sizes=[2,8]"], "not both"),
        (
            ["tokens=[1000]", "models=[{name: 14m, global_batch_sizes: [0]}]"],
            "models.0.global_batch_sizes: give at least one, each > 0",
        ),
    ],
)
def test_bad_sweep_configs_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as error:
        sweep(*overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_ranks_count_that_cannot_split_the_batch_is_refused():
    with pytest.raises(ConfigError, match="does not split over 3 ranks"):
        plan_sweep(sweep("tokens=[10000]", "global_batch_size=8", "nproc_per_node=3"))
    with pytest.raises(ConfigError, match="model a: global batch 2 does not split over 4 ranks"):
        plan_sweep(sweep("tokens=[10000]", "global_batch_sizes=[8,2]", "nproc_per_node=4"))
    own = "models=[{name: b, d_model: 64, n_layers: 2, n_heads: 2, global_batch_sizes: [8, 6]}]"
    with pytest.raises(ConfigError, match="model b: global batch 6 does not split over 4 ranks"):
        plan_sweep(sweep("tokens=[10000]", own, "nproc_per_node=4"))


@pytest.mark.slow
def test_summary_of_a_finished_isoflop_sweep_fits_and_plots_on_the_parent(tmp_path, capsys):
    """Six runs' result.json written by hand (losses from a known law; one with an MLflow child run): the
    parent gets the final losses, fit.json and every plot; the child its epochs and train/val gap."""
    from mlflow.tracking import MlflowClient

    SMALL_GRID = InitGrid(alpha=(0.5,), beta=(0.5,), e=(0.0, 1.0), a=(5.0, 10.0), b=(5.0, 10.0))
    cfg = sweep(
        "compute=[1e11,1e12]",
        "models=[{name: a, d_model: 32, n_layers: 1, n_heads: 1}, "
        "{name: b, d_model: 64, n_layers: 2, n_heads: 2}, {name: c, d_model: 96, n_layers: 3, n_heads: 3}]",
        tmp_path=tmp_path,
    )
    plan = plan_sweep(cfg)
    write_plan(plan, cfg.root_dir)
    client = MlflowClient(tracking_uri=cfg.resolve_uri())
    parent = ensure_parent_run(cfg)
    assert ensure_parent_run(cfg) == parent  # remembered in sweep.json
    child = client.create_run(
        client.get_run(parent).info.experiment_id, run_name=plan.runs[0].name
    ).info.run_id
    epochs = {plan.runs[0].name: 2.5, plan.runs[1].name: 0.5}
    for run in plan.runs:
        loss = 1.5 + 30 / run.N**0.3 + 60 / run.D**0.3
        if run is plan.runs[0]:  # the last log window's mean, which the gap prefers to the last step's loss
            client.log_metric(child, "train/loss", loss - 0.02, step=10)
            client.set_terminated(child, "FINISHED")
        (tmp_path / "runs" / run.name / "result.json").write_text(
            json.dumps(
                {
                    "n_params": run.N,
                    "tokens_seen": run.D,
                    "final_val_loss": loss,
                    "last_train_loss": loss - 0.05,
                    "mlflow_run_id": child if run is plan.runs[0] else None,
                    "data": {"all": {"epochs": epochs.get(run.name, 0.9)}},
                }
            )
        )
    fit = summarize(cfg, plan, parent, fit_options=FitOptions(grid=SMALL_GRID, n_bootstrap=0))
    assert fit is not None and json.loads(fit.read_text())["n_points"] == 6
    assert f"1 run(s) repeated their data (epochs > 1): {plan.runs[0].name}" in capsys.readouterr().err
    tagged = client.get_run(child).data
    assert tagged.tags["epochs"] == "2.5" and tagged.tags["repeats_data"] == "true"
    assert tagged.metrics["train_val_gap"] == pytest.approx(0.02)
    results = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert results[plan.runs[1].name]["epochs"] == 0.5
    assert results[plan.runs[1].name]["train_val_gap"] == pytest.approx(0.05)
    run = client.get_run(parent)
    assert (
        run.info.status == "FINISHED"
        and len([k for k in run.data.metrics if k.startswith("final_val_loss/")]) == 6
    )
    plots = {a.path for a in client.list_artifacts(parent, "plots")}
    assert plots == {
        f"plots/{name}.png"
        for name in ("loss_vs_compute", "loss_vs_tokens", "isoflop", "fit_vs_observed", "train_val_gap")
    }
    assert "fit.json" in {a.path for a in client.list_artifacts(parent)}


@pytest.mark.slow
def test_a_learning_rate_sweep_fits_each_points_best_run_and_the_csv_refits_alike(tmp_path, monkeypatch):
    """3 models x 2 data sizes x 3 lr multipliers: each point's loss is its best multiplier's, runs.csv
    marks those, and ``lmpipe sweep fit --csv fit_points.csv`` gives fit.json's law again."""
    import functools

    from pipeline.cli.main import main
    from pipeline.scaling import fit as fit_module

    grid = InitGrid(alpha=(0.5,), beta=(0.5,), e=(0.0, 1.0), a=(5.0, 10.0), b=(5.0, 10.0))
    cfg = sweep(
        "tokens=[20000,80000]",
        "lr_multipliers=[0.5,1,2]",
        "models=[{name: a, d_model: 32, n_layers: 1, n_heads: 1}, "
        "{name: b, d_model: 64, n_layers: 2, n_heads: 2}, {name: c, d_model: 96, n_layers: 3, n_heads: 3}]",
        tmp_path=tmp_path,
    )
    plan = plan_sweep(cfg)
    write_plan(plan, cfg.root_dir)
    parent = ensure_parent_run(cfg)
    best_multiplier = {"a": 2.0, "b": 1.0, "c": 0.5}  # larger models want a smaller lr
    for run in plan.runs:
        multiplier = float(run.name.rsplit("-lr", 1)[1].removesuffix("x"))  # a-d20k-lr0.5x
        penalty = 0.1 * abs(multiplier / best_multiplier[run.model] - 1)
        loss = 1.5 + 30 / run.N**0.3 + 60 / run.D**0.3 + penalty
        (tmp_path / "runs" / run.name / "result.json").write_text(
            json.dumps(
                {"n_params": run.N, "tokens_seen": run.D, "final_val_loss": loss, "last_train_loss": loss}
            )
        )
    fit = summarize(cfg, plan, parent, fit_options=FitOptions(grid=grid, n_bootstrap=20))

    with (tmp_path / "runs.csv").open() as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 18 and sum(row["best_of_lr"] == "true" for row in runs) == 6
    with (tmp_path / "fit_points.csv").open() as handle:
        points = list(csv.DictReader(handle))
    chosen = {row["name"] for row in points}
    assert chosen == {f"{m}-d{d}-lr{best_multiplier[m]:g}x" for m in "abc" for d in ("20k", "80k")}
    assert chosen == {row["name"] for row in runs if row["best_of_lr"] == "true"}

    monkeypatch.setattr(fit_module, "FitOptions", functools.partial(FitOptions, grid=grid))
    again = tmp_path / "refit.json"
    argv = ["sweep", "fit", "--csv", str(tmp_path / "fit_points.csv"), "--d-col", "D", "--n-bootstrap", "20"]
    assert main([*argv, "--output", str(again)]) == 0
    ours, refit = json.loads(fit.read_text()), json.loads(again.read_text())
    for key in ("E", "A", "B", "alpha", "beta", "ci", "n_points"):
        assert refit[key] == ours[key], key
