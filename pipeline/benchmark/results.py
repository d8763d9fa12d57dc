"""``lmpipe bench table``: ``bench node`` JSON reports as rows for ``bench/RESULTS.md``'s GPU section.

Torch-free: it only reads the reports. The columns are that section's table (strategy, micro-batch,
tokens/s, MFU, peak GiB), then the matmul and all-reduce figures of the same run and the command that
made the row, under a heading with what the section asks of every figure: device, date, commit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GiB = 1024**3


def load_reports(paths: list[str | Path]) -> list[dict[str, Any]]:
    return [json.loads(Path(path).read_text()) for path in paths]


def command_of(report: dict[str, Any]) -> str:
    """The ``lmpipe bench node`` command that reproduces the report's run (on a device of its kind)."""
    cfg = report["config"]
    return (
        f"lmpipe bench node --size {cfg['size']} --strategy {cfg['strategy']}"
        + (" --compile" if cfg["compile"] else "")
        + f" --seconds {cfg['seconds']:g} --micro-batch {cfg['micro_batch']} --seq-len {cfg['seq_len']}"
    )


def results_table(reports: list[dict[str, Any]]) -> str:
    """A heading (device, date, commit, torch, world size) and one row per report, in the given order."""
    if not reports:
        return ""
    first = reports[0]
    heading = (
        f"### {first['date'][:10]}: `bench/gpu_check.sh` ({first['device']}, world size "
        f"{first['world_size']}, torch {first['torch']}, commit {(first['commit'] or 'unknown')[:7]})"
    )
    lines = [
        heading,
        "",
        "| strategy | micro-batch | tokens/s | MFU | peak GiB | matmul TFLOP/s | all-reduce busbw GB/s "
        "| command |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for report in reports:
        cfg, train, reduce = report["config"], report["train"], report["all_reduce"]
        slowest = min(report["per_node"], key=lambda node: node["matmul_tflops"])
        fraction = slowest["matmul_fraction_of_peak"]
        busbw = None if reduce is None else reduce["busbw_gbps"]
        lines.append(
            f"| {cfg['strategy']}{' + compile' if cfg['compile'] else ''} | {cfg['micro_batch']} "
            f"| {train['tokens_per_s_per_device'] / 1e3:.1f}k | {percent(train['mfu'])} "
            f"| {train['peak_memory_bytes'] / GiB:.1f} "
            f"| {slowest['matmul_tflops']:.3g}"
            + ("" if fraction is None else f" ({percent(fraction)})")
            + " "
            f"| {'n/a (one rank)' if busbw is None else f'{busbw:.1f}'} | `{command_of(report)}` |"
        )
    return "\n".join(lines)


def percent(fraction: float | None) -> str:
    """A fraction as a percentage with one decimal; ``n/a`` for None (no peak known)."""
    return "n/a" if fraction is None else f"{100 * fraction:.1f}%"
