"""Predict a run from a fitted law before it is trained, then check the prediction against it.

``lmpipe sweep predict`` evaluates fit.json's law at a model size and token count (or at the
compute-optimal allocation of a budget) with the interval of its bootstrap refits, and can keep that
as a record, timestamped, that refuses to be overwritten: the prediction exists before the run does.
``lmpipe sweep verify`` reads the trained run's result.json, compares (relative error, inside the
interval or not, whether the record is older than the run) and adds the verdict to the record and,
given the sweep, to its MLflow parent run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError, InputError, MissingInputError
from pipeline.core.files import atomic_write_json, file_sha256
from pipeline.scaling.fit import ScalingFit

SHAPE_RTOL = 0.02
"""A run whose N or D differs from the predicted one by more than this is another run: verify refuses it
(D is rounded to whole optimizer steps, N to what the shape rule gives: both well inside 2%)."""


@dataclass(frozen=True)
class Prediction:
    """What the law says a run will reach, as recorded before the run."""

    fit_file: str
    fit_sha256: str
    N: float
    """Non-embedding parameters of the predicted run."""
    D: float
    """Training tokens of the predicted run."""
    C: float
    """6 N D."""
    loss: float
    """Predicted final validation loss."""
    ci: tuple[float, float] | None
    """Interval of the loss over the fit's bootstrap refits (None: the fit has none)."""
    ci_level: float
    made_at: str
    """UTC time the prediction was made (ISO 8601)."""
    compute_optimal: bool = False
    """Whether N and D are the law's optimal allocation of the budget C rather than given."""


@dataclass(frozen=True)
class Verification:
    """A trained run set against its prediction."""

    result_file: str
    observed: float
    """The run's final validation loss."""
    N: int
    D: int
    relative_error: float
    """(predicted - observed) / observed: positive when the law was pessimistic."""
    inside_ci: bool | None
    """Whether the observed loss lies in the prediction's interval (None: no interval)."""
    predicted_before_run: bool
    """Whether the record is older than every run's start (result.json's time less its duration)."""
    candidates: dict[str, float] = field(default_factory=dict)
    """Each run tried (result.json -> final val loss); ``observed`` is the lowest."""


def load_fit(path: str | Path) -> ScalingFit:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"fit not found: {path} (lmpipe sweep fit or sweep run writes it)")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from None
    return ScalingFit.from_json(data)


def predict_run(fit_file: str | Path, *, n: float = 0.0, d: float = 0.0, compute: float = 0.0) -> Prediction:
    """The prediction at (``n``, ``d``), or at the compute-optimal (N*, D*) of ``compute`` FLOP."""
    if compute:
        if n or d:
            raise ConfigError("give --n and --d, or --compute, not both")
    elif not (n > 0 and d > 0):
        raise ConfigError("give the run's size: --n N --d D (both > 0), or a budget: --compute C")
    fit = load_fit(fit_file)
    if compute:
        optimum = fit.compute_optimal(compute)
        n, d = optimum.n, optimum.d
    loss, ci = fit.predict_interval(n, d)
    return Prediction(
        fit_file=str(fit_file),
        fit_sha256=file_sha256(fit_file),
        N=n,
        D=d,
        C=6.0 * n * d,
        loss=loss,
        ci=ci,
        ci_level=fit.ci_level,
        made_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        compute_optimal=bool(compute),
    )


def record_prediction(prediction: Prediction, path: str | Path) -> Path:
    """Write the record; an existing one is never replaced (a prediction made after the run is not one)."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} already holds a prediction; choose another --output (records are kept)")
    return atomic_write_json(path, {"prediction": asdict(prediction)})


def read_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"no prediction record at {path} (lmpipe sweep predict --output writes one)")
    record = json.loads(path.read_text())
    if "prediction" not in record:
        raise InputError(f"{path} is not a prediction record (no 'prediction' key)")
    return record


def verify_run(record: dict[str, Any], result_files: list[str | Path]) -> Verification:
    """Set the run of ``result_files`` (training jobs' result.json) against the recorded prediction.

    Several files are the learning rates tried for the predicted run: the observed loss is their best,
    as each point of the fit is its best run (``pipeline.scaling.results.fitted_points``)."""
    if not result_files:
        raise ConfigError("verify needs at least one trained run")
    results = [_predicted_result(record["prediction"], Path(path)) for path in result_files]
    best_file, best, _ = min(results, key=lambda item: item[1]["final_val_loss"])
    observed = float(best["final_val_loss"])
    predicted = record["prediction"]
    made = datetime.fromisoformat(predicted["made_at"]).timestamp()
    ci = predicted.get("ci")
    return Verification(
        result_file=str(best_file),
        observed=observed,
        N=int(best["n_params"]),
        D=int(best["tokens_seen"]),
        relative_error=(predicted["loss"] - observed) / observed,
        inside_ci=None if ci is None else ci[0] <= observed <= ci[1],
        predicted_before_run=all(made <= started for _, _, started in results),
        candidates={str(path): float(result["final_val_loss"]) for path, result, _ in results},
    )


def _predicted_result(predicted: dict[str, Any], result_file: Path) -> tuple[Path, dict[str, Any], float]:
    """(the file, its result, when its run started) of a finished run of the predicted N and D."""
    if not result_file.is_file():
        raise MissingInputError(f"no result.json at {result_file}: has the run finished?")
    result = json.loads(result_file.read_text())
    if result.get("final_val_loss") is None:
        raise InputError(f"{result_file} has no final_val_loss: the run did not validate")
    for key, value in (("N", result["n_params"]), ("D", result["tokens_seen"])):
        if abs(value - predicted[key]) > SHAPE_RTOL * predicted[key]:
            raise InputError(
                f"the run of {result_file} has {key}={value:,}, the prediction is for "
                f"{key}={predicted[key]:,.0f}: not the predicted run"
            )
    return result_file, result, result_file.stat().st_mtime - float(result.get("seconds", 0.0))


def add_verification(path: str | Path, record: dict[str, Any], verification: Verification) -> Path:
    """The record with its verdict (verifying again replaces the verdict, never the prediction)."""
    return atomic_write_json(Path(path), {**record, "verification": asdict(verification)})


def log_on_parent(client: Any, parent_run_id: str, record_file: Path, verification: Verification) -> None:
    """Predicted and observed loss, the relative error and the verdict as metrics and tags of the sweep's
    parent run, and the record as its artifact."""
    from mlflow.entities import Metric, RunTag

    prediction = json.loads(record_file.read_text())["prediction"]
    now = int(time.time() * 1000)
    values = {
        "prediction/loss": prediction["loss"],
        "prediction/observed": verification.observed,
        "prediction/relative_error": verification.relative_error,
        "prediction/N": prediction["N"],
        "prediction/D": prediction["D"],
    }
    if prediction.get("ci"):
        values["prediction/ci_low"], values["prediction/ci_high"] = prediction["ci"]
    tags = {
        "prediction.inside_ci": str(verification.inside_ci).lower(),
        "prediction.made_at": prediction["made_at"],
        "prediction.before_run": str(verification.predicted_before_run).lower(),
    }
    client.log_batch(
        parent_run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in values.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
    )
    client.log_artifact(parent_run_id, str(record_file), "prediction")


def describe(prediction: dict[str, Any], verification: Verification | None = None) -> str:
    """A recorded prediction (``asdict(Prediction)``) and its verdict as a few lines for the terminal."""
    ci = prediction.get("ci")
    interval = (
        f" [{ci[0]:.4f}, {ci[1]:.4f}] ({100 * prediction['ci_level']:g}% CI)"
        if ci
        else " (no interval: the fit has no bootstrap refits)"
    )
    how = "compute-optimal at" if prediction.get("compute_optimal") else "at"
    lines = [
        f"predicted final val loss {prediction['loss']:.4f}{interval}",
        f"  {how} N={prediction['N']:,.0f}, D={prediction['D']:,.0f}, C={prediction['C']:.3g} FLOP",
    ]
    if verification is not None:
        inside = {True: "inside", False: "outside", None: "no"}[verification.inside_ci]
        tried = len(verification.candidates)
        best_of = f" (the best of {tried} runs)" if tried > 1 else ""
        when = "before" if verification.predicted_before_run else "AFTER"
        lines.append(
            f"observed {verification.observed:.4f}{best_of}: relative error "
            f"{100 * verification.relative_error:+.2f}%, {inside} the interval; "
            f"predicted {when} the run started"
        )
    return "\n".join(lines)
