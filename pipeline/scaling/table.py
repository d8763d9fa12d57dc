"""The sweep plan as a table: what ``lmpipe sweep plan`` prints, and the cells ``sweep compare`` shares."""

from __future__ import annotations

from pipeline.scaling.grid import si
from pipeline.scaling.plan import Plan


def format_plan(plan: Plan) -> str:
    """Aligned columns; the time is an estimate (measured tokens/s, else a FLOP/s guess)."""
    header = ("run", "N", "D", "C", "lr", "batch", "steps", "warmup", "epochs", "est. time")
    rows = [
        (
            r.name,
            si(r.N),
            si(r.D),
            f"{r.C:.2e}",
            f"{r.lr:.2e}",
            str(r.global_batch_size),
            str(r.steps),
            str(r.warmup_steps),
            epochs_cell(r.epochs),
            duration(r.est_seconds),
        )
        for r in plan.runs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))
        )
        for row in [header, *rows]
    ]
    total = sum(r.est_seconds for r in plan.runs)
    lines.append(
        f"{len(plan.runs)} runs, {si(sum(r.D for r in plan.runs))} tokens, "
        f"C = {sum(r.C for r in plan.runs):.2e} FLOP; estimated {duration(total)} one after another"
    )
    repeating = [r.name for r in plan.runs if r.epochs > 1]
    if repeating:
        lines.append(
            f"* {len(repeating)} run(s) repeat their data (more than one epoch of the training split): "
            "data-constrained points, where a repeated token is worth less than a new one"
        )
    lines += [f"skipped: {reason}" for reason in plan.skipped]
    return "\n".join(lines)


def epochs_cell(epochs: float | None) -> str:
    """Epochs for a table, starred above 1 (data repeated); ``-`` when unknown."""
    if not epochs:
        return "-"
    return f"{epochs:.2f}" + ("*" if epochs > 1 else "")


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"~{seconds:.0f}s"
    if seconds < 3600:
        return f"~{seconds / 60:.1f}m"
    return f"~{seconds / 3600:.1f}h"
