"""``lmpipe data stats``: a human summary of a prep output (stats.json) or a shards dir (manifest.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_prep.tokenizer.manifest import load_manifest
from pipeline.core.errors import MissingInputError


def summarize_dir(directory: Path) -> str:
    """Summarise whichever of stats.json / manifest.json the directory holds (both if both)."""
    parts = []
    if (directory / "stats.json").is_file():
        parts.append(summarize_prep(json.loads((directory / "stats.json").read_text())))
    if (directory / "manifest.json").is_file():
        parts.append(summarize_manifest(load_manifest(directory)))
    if not parts:
        raise MissingInputError(
            f"{directory}: no stats.json (data prep) or manifest.json (data tokenize) here"
        )
    return "\n\n".join(parts)


def summarize_prep(stats: dict[str, Any]) -> str:
    """A table of the stages (documents in, kept, dropped, errors, MB kept, seconds, docs/s), the drop
    reasons and error kinds with example locations, the dedup decision, and the totals."""
    totals = stats["totals"]
    header = ("stage", "in", "kept", "dropped", "errors", "MB kept", "seconds", "docs/s")
    rows = [header]
    for name, stage in stats["stages"].items():
        errors = sum(entry["count"] for entry in stage["errors"].values())
        rows.append(
            (
                name,
                f"{stage['input']:,}",
                f"{stage['kept']:,}",
                f"{sum(stage['dropped'].values()):,}",
                f"{errors:,}",
                f"{stage['bytes'] / 1e6:,.1f}",
                f"{stage['seconds']:,.2f}",
                _rate(stage["input"], stage["seconds"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        )
        for row in rows
    ]
    if totals["dropped"]:
        lines.append("dropped")
        for reason, count in sorted(totals["dropped"].items(), key=lambda item: -item[1]):
            lines.append(f"  {reason:<36} {count:>9,}")
    if totals["errors"]:
        lines.append("errors")
        for name, stage in stats["stages"].items():
            for kind, entry in stage["errors"].items():
                examples = "; ".join(entry["examples"][:2])
                lines.append(f"  {name + '/' + kind:<36} {entry['count']:>9,}   e.g. {examples}")
    if "cluster" in stats:
        cluster = stats["cluster"]
        removed = ", ".join(f"{reason} {n:,}" for reason, n in cluster["removed"].items())
        lines.append(
            f"dedup over {cluster['docs']:,} documents: {removed} ({cluster['clusters']:,} near-duplicate "
            f"clusters, {cluster['seconds']:.2f} s)"
        )
    wall = f", wall {totals['wall_seconds']:,.1f} s" if "wall_seconds" in totals else ""
    lines.append(
        f"read {totals['input']:,}, kept {totals['kept']:,} ({_share(totals['kept'], totals['input'])}); "
        f"text kept {totals['bytes_out'] / 1e6:,.1f} MB of {totals['bytes_in'] / 1e6:,.1f} MB read; "
        f"{totals.get('docs_per_second', 0):,.0f} docs/s per core over {len(stats['tasks'])} task(s){wall}"
    )
    return "\n".join(lines)


def summarize_manifest(manifest: dict[str, Any]) -> str:
    """Tokenizer (vocab, dtype, EOS, hash), shard/doc/token totals with the run-wide counts, and the
    split and source breakdown. Counts and token names are optional: older manifests lack them."""
    tokenizer, totals = manifest["tokenizer"], manifest["totals"]
    eos = f"  eos {tokenizer['eos_token']} ({tokenizer['eos_id']})" if tokenizer.get("eos_token") else ""
    files = f" from {totals['input_files']:,} docs files" if "input_files" in totals else ""
    skipped = f"; {totals['skipped_empty']:,} empty docs skipped" if "skipped_empty" in totals else ""
    lines = [
        f"tokenizer vocab {tokenizer['vocab_size']:,} ({manifest['dtype']}){eos}"
        f"  sha256 {tokenizer['sha256'][:12]}",
        f"{len(manifest['shards'])} shards, {totals['docs']:,} docs, {totals['tokens']:,} tokens"
        f"{files}{skipped}",
    ]
    for group in ("by_split", "by_source"):
        for name, counts in sorted(totals[group].items()):
            lines.append(f"  {name:<8} {counts['docs']:>9,} docs {counts['tokens']:>12,} tokens")
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"
