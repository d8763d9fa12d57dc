"""What a repeated token is worth: data-constrained runs (a unique budget U trained for several epochs)
set against the law fitted on fresh data (Muennighoff et al. 2023, "Scaling Data-Constrained Language
Models").

A run of D = U (1 + R) tokens, R repeats of U unique ones, reaches some loss; the fitted law says how
many fresh tokens D' would have reached it at the same N: D' = (B / (L - E - A / N^alpha))^(1/beta).
The value of a repeated token is (D' - U) / (D - U): 1 when repeating is as good as new data, 0 when
it adds nothing. Muennighoff et al. model the decay as D' = U + U R* (1 - exp(-R / R*)): the first
repeats are worth almost a fresh token each, and R* (their fit: ~15 epochs' worth for the models they
trained) is the number of repeats after which the value has fallen by 1/e. ``fit_r_star`` fits R* to
the runs by least squares on log D'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from pipeline.core.errors import InputError
from pipeline.scaling.fit import ScalingFit

R_STAR_BOUNDS = (0.05, 1000.0)
"""The search range of R* (repeats); a fit at the upper bound means the repeats lost nothing measurable."""


@dataclass(frozen=True)
class RepeatedRun:
    """One data-constrained run, set against fresh data."""

    name: str
    D: float
    """Tokens trained on."""
    U: float
    """Unique tokens among them."""
    loss: float
    """Its final validation loss."""
    fresh_loss: float | None
    """The final validation loss of the run of the same N and D on fresh data (None: not trained)."""
    effective_D: float
    """D': the fresh tokens the law says reach ``loss`` at this N (inf: below the law's floor at N)."""

    @property
    def repeats(self) -> float:
        """R: passes over U after the first."""
        return self.D / self.U - 1.0

    @property
    def value_of_a_repeat(self) -> float | None:
        """(D' - U) / (D - U): what a repeated token was worth in fresh tokens (None without repeats)."""
        if self.D <= self.U:
            return None
        return (self.effective_D - self.U) / (self.D - self.U)


@dataclass(frozen=True)
class RepeatAnalysis:
    n: float
    runs: list[RepeatedRun]
    r_star: float | None
    """Muennighoff et al.'s R* fitted to ``runs`` (None: no run repeated its data)."""


def effective_tokens(fit: ScalingFit, n: float, loss: float) -> float:
    """The fresh tokens at which the law reaches ``loss`` with ``n`` parameters (inf if it never does)."""
    reducible = loss - fit.E - fit.A / n**fit.alpha
    return math.inf if reducible <= 0 else (fit.B / reducible) ** (1.0 / fit.beta)


def decayed_tokens(u: float, repeats: float, r_star: float) -> float:
    """Muennighoff et al.'s D' = U + U R* (1 - exp(-R / R*))."""
    return u + u * r_star * (1.0 - math.exp(-repeats / r_star))


def fit_r_star(runs: list[RepeatedRun]) -> float | None:
    """R* minimising the squared log error between ``decayed_tokens`` and each repeated run's D'."""
    usable = [r for r in runs if r.repeats > 0 and math.isfinite(r.effective_D)]
    if not usable:
        return None

    def error(log_r_star: float) -> float:
        r_star = math.exp(log_r_star)
        return sum(
            (math.log(decayed_tokens(r.U, r.repeats, r_star)) - math.log(r.effective_D)) ** 2 for r in usable
        )

    low, high = (math.log(x) for x in R_STAR_BOUNDS)
    return float(math.exp(minimize_scalar(error, bounds=(low, high), method="bounded").x))


def analyse_repeats(
    fit: ScalingFit,
    n: float,
    runs: list[tuple[str, float, float, float]],
    fresh: dict[float, float] | None = None,
) -> RepeatAnalysis:
    """``runs``: (name, D, U, final loss) of one model size ``n``; ``fresh``: D -> the fresh run's loss."""
    if not runs:
        raise InputError("no data-constrained run has finished")
    for name, d, u, _ in runs:
        if not 0 < u <= d:
            raise InputError(f"run {name}: unique tokens U={u:,.0f} must be in (0, D={d:,.0f}]")
    fresh = fresh or {}
    analysed = [
        RepeatedRun(
            name=name,
            D=d,
            U=u,
            loss=loss,
            fresh_loss=_at(fresh, d),
            effective_D=effective_tokens(fit, n, loss),
        )
        for name, d, u, loss in sorted(runs, key=lambda run: run[1])
    ]
    return RepeatAnalysis(n=n, runs=analysed, r_star=fit_r_star(analysed))


def _at(fresh: dict[float, float], d: float, rtol: float = 0.02) -> float | None:
    """The fresh loss at D = ``d`` (within ``rtol``: D is rounded to whole steps), if trained."""
    close = [loss for key, loss in fresh.items() if abs(key - d) <= rtol * d]
    return float(np.mean(close)) if close else None


def describe_repeats(analysis: RepeatAnalysis) -> str:
    """The runs as a table (D, epochs, loss, fresh loss, D', value of a repeated token) and R*."""
    lines = [
        f"data-constrained runs at N = {analysis.n:,.0f}, U = {analysis.runs[0].U:,.0f} unique tokens",
        f"  {'run':24} {'D':>11} {'epochs':>6} {'loss':>7} {'fresh':>7} {'D_eff':>11} {'value':>6}",
    ]
    for r in analysis.runs:
        fresh = f"{r.fresh_loss:.4f}" if r.fresh_loss is not None else "-"
        value = f"{r.value_of_a_repeat:.3f}" if r.value_of_a_repeat is not None else "-"
        lines.append(
            f"  {r.name:24} {r.D:>11,.0f} {r.D / r.U:>6.2f} {r.loss:>7.4f} {fresh:>7} "
            f"{r.effective_D:>11,.0f} {value:>6}"
        )
    if analysis.r_star is not None:
        lines.append(f"  R* = {analysis.r_star:.3g} repeats (fit of D' = U + U R* (1 - e^(-R/R*)))")
    return "\n".join(lines)
