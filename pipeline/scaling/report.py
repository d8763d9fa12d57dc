"""A fitted law printed for a terminal: its parameters with their intervals, the compute-optimal exponents
both approaches imply, and the allocation at given budgets."""

from __future__ import annotations

from pipeline.scaling.fit import ComputeOptimal, ScalingFit
from pipeline.scaling.isoflop import IsoFlopFit


def format_fit(fit: ScalingFit, isoflop: IsoFlopFit | None) -> str:
    """The fitted law as a few aligned lines, with the compute-optimal exponents both approaches imply."""
    percent = f"{100 * fit.ci_level:g}% CI"
    lines = [
        f"L(N, D) = E + A/N^alpha + B/D^beta  ({fit.n_points} points, Huber objective {fit.objective:.4g})",
        f"  {'':6} {'value':>11}  {percent if fit.ci else ''}",
    ]
    for key in ("E", "A", "B", "alpha", "beta"):
        bounds = fit.ci.get(key)
        interval = f"[{bounds[0]:.4g}, {bounds[1]:.4g}]" if bounds else ""
        lines.append(f"  {key:6} {getattr(fit, key):>11.4g}  {interval}")
    total = fit.alpha + fit.beta
    lines.append(f"  compute-optimal: N_opt ~ C^{fit.beta / total:.3f}, D_opt ~ C^{fit.alpha / total:.3f}")
    if isoflop is not None:
        lines.append(
            f"  IsoFLOP ({len(isoflop.budgets)} budgets): "
            f"N_opt ~ C^{isoflop.a:.3f}, D_opt ~ C^{isoflop.b:.3f}"
        )
    return "\n".join(lines)


def format_optima(optima: list[ComputeOptimal], ci_level: float) -> str:
    """One line per budget: N*, D* and the predicted loss, each with its bootstrap interval if it has one."""

    def cell(o: ComputeOptimal, key: str, value: float) -> str:
        bounds = o.ci.get(key)
        return f"{value:.3g}" + (f" [{bounds[0]:.3g}, {bounds[1]:.3g}]" if bounds else "")

    lines = [f"compute-optimal at C (fitted law{f', {100 * ci_level:g}% CI' if optima[0].ci else ''}):"]
    for o in optima:
        lines.append(
            f"  C={o.compute:.3g}: N*={cell(o, 'N', o.n)}  D*={cell(o, 'D', o.d)}  "
            f"loss={cell(o, 'loss', o.loss)}"
        )
    return "\n".join(lines)
