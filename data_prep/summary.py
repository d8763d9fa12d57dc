"""``lmpipe data stats``: a human summary of a prep output (stats.json) or a shards dir (manifest.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def summarize_dir(directory: Path) -> str:
    """Summarise whichever of stats.json / manifest.json the directory holds (both if both)."""
    parts = []
    if (directory / "stats.json").is_file():
        parts.append(summarize_prep(json.loads((directory / "stats.json").read_text())))
    if (directory / "manifest.json").is_file():
        from data_prep.tokenizer.manifest import load_manifest

        parts.append(summarize_manifest(load_manifest(directory)))
    if not parts:
        raise FileNotFoundError(f"{directory}: no stats.json (data prep) or manifest.json (data tokenize) here")
    return "\n\n".join(parts)


def summarize_prep(stats: dict[str, Any]) -> str:
    totals = stats["totals"]
    lines = [f"documents read {totals['input']:,}   kept {totals['kept']:,}   "
             f"({_share(totals['kept'], totals['input'])})   {totals.get('docs_per_second', 0):,.0f} docs/s"]
    for reason, count in sorted(totals["dropped"].items(), key=lambda item: -item[1]):
        lines.append(f"  dropped {reason:<32} {count:>9,}")
    for kind, count in sorted(totals["errors"].items()):
        lines.append(f"  error   {kind:<32} {count:>9,}")
    for name, stage in stats["stages"].items():
        for kind, entry in stage["errors"].items():
            lines.append(f"  e.g. {name}/{kind}: {', '.join(entry['examples'][:2])}")
    lines.append(f"text kept {totals['bytes_out'] / 1e6:,.1f} MB of {totals['bytes_in'] / 1e6:,.1f} MB read")
    return "\n".join(lines)


def summarize_manifest(manifest: dict[str, Any]) -> str:
    tokenizer, totals = manifest["tokenizer"], manifest["totals"]
    lines = [f"tokenizer vocab {tokenizer['vocab_size']:,} ({manifest['dtype']})  sha256 {tokenizer['sha256'][:12]}",
             f"{len(manifest['shards'])} shards, {totals['docs']:,} docs, {totals['tokens']:,} tokens"]
    for group in ("by_split", "by_source"):
        for name, counts in sorted(totals[group].items()):
            lines.append(f"  {name:<8} {counts['docs']:>9,} docs {counts['tokens']:>12,} tokens")
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"
