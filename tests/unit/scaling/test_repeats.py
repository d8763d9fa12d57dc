"""What a repeated token is worth: the law's effective data of data-constrained runs, and Muennighoff et
al.'s R* recovered from runs made to follow it."""

from __future__ import annotations

import math

import pytest

from pipeline.core.errors import InputError
from pipeline.scaling.fit import ScalingFit
from pipeline.scaling.repeats import analyse_repeats, decayed_tokens, effective_tokens

LAW = ScalingFit(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37, ci={}, objective=0.0, n_points=20)
N, U = 1e8, 2e9


def test_effective_tokens_inverts_the_law():
    for d in (1e9, 3e10, 1e12):
        assert effective_tokens(LAW, N, float(LAW.predict(N, d))) == pytest.approx(d, rel=1e-9)
    assert effective_tokens(LAW, N, LAW.E) == math.inf  # below the floor at this N: no data reaches it


def test_r_star_is_recovered_from_runs_that_follow_the_decay():
    r_star = 5.0
    runs = [
        (f"r{repeats}", U * (1 + repeats), U, float(LAW.predict(N, decayed_tokens(U, repeats, r_star))))
        for repeats in (0, 1, 3, 7)
    ]
    fresh = {U * (1 + repeats): float(LAW.predict(N, U * (1 + repeats))) for repeats in (0, 1, 3, 7)}
    analysis = analyse_repeats(LAW, N, runs, fresh)
    assert analysis.r_star == pytest.approx(r_star, rel=1e-3)
    once, twice = analysis.runs[0], analysis.runs[1]
    assert once.repeats == 0 and once.value_of_a_repeat is None and once.loss == once.fresh_loss
    assert twice.value_of_a_repeat == pytest.approx(r_star * (1 - math.exp(-1 / r_star)), rel=1e-6)
    assert all(r.loss >= r.fresh_loss for r in analysis.runs)  # repeating never beats fresh data here
    values = [r.value_of_a_repeat for r in analysis.runs[1:]]
    assert values == sorted(values, reverse=True)  # each further repeat is worth less


def test_repeats_that_cost_nothing_fit_a_large_r_star_and_none_without_repeats():
    free = [(f"r{r}", U * (1 + r), U, float(LAW.predict(N, U * (1 + r)))) for r in (1, 3)]
    assert analyse_repeats(LAW, N, free).r_star > 100
    assert analyse_repeats(LAW, N, [("once", U, U, 3.0)]).r_star is None


def test_a_unique_budget_above_d_is_refused():
    with pytest.raises(InputError, match="unique tokens U=3 must be in"):
        analyse_repeats(LAW, N, [("bad", 2.0, 3.0, 3.0)])


def test_sweep_repeats_sets_a_data_constrained_sweep_against_fresh_runs(tmp_path, capsys):
    """Two sweep configs of one model (fresh, and ``data.unique_tokens`` = its smallest D), their runs'
    result.json written from a known law and R* = 5: ``lmpipe sweep repeats`` finds R* and plots it."""
    import json

    from pipeline.cli.main import main
    from pipeline.core.files import atomic_write_json
    from pipeline.scaling.plan import SweepConfig, plan_sweep

    shape = "models: [{name: m, d_model: 64, n_layers: 2, n_heads: 2}]\ntokens: [4096, 8192, 16384, 32768]\n"
    configs = {}
    for name, extra in (("fresh", ""), ("repeat", ", data.unique_tokens=4096")):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(
            f"name: {name}\nroot: {tmp_path / name}\nglobal_batch_size: 8\n"
            f"overrides: [data.shards=s, model.seq_len=64, train.micro_batch_size=4{extra}]\n{shape}"
        )
    fit = atomic_write_json(tmp_path / "fit.json", LAW.to_json())
    for name, config in configs.items():
        for run in plan_sweep(SweepConfig.load(str(config))).runs:
            d = decayed_tokens(4096, run.D / 4096 - 1, 5.0) if name == "repeat" else run.D
            result = {"n_params": run.N, "tokens_seen": run.D, "final_val_loss": float(LAW.predict(run.N, d))}
            directory = tmp_path / name / "runs" / run.name
            directory.mkdir(parents=True)
            (directory / "result.json").write_text(json.dumps({**result, "last_train_loss": 0.0}))
    argv = ["sweep", "repeats", "--config", str(configs["repeat"]), "--fresh", str(configs["fresh"])]
    assert main([*argv, "--fit", str(fit)]) == 0
    out = capsys.readouterr().out
    analysis = json.loads((tmp_path / "repeat" / "repeats.json").read_text())
    assert analysis["r_star"] == pytest.approx(5.0, rel=1e-3) and "R* = 5" in out
    assert [round(run["D"] / run["U"]) for run in analysis["runs"]] == [1, 2, 4, 8]
    assert all(run["fresh_loss"] is not None for run in analysis["runs"])
    assert (tmp_path / "repeat" / "plots" / "repeats.png").stat().st_size > 10_000
