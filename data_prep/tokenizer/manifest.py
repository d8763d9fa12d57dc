"""manifest.json: what a tokenized directory holds, written last so its presence means "complete".

It names the tokenizer (path, sha256, vocab size, special ids and names), the token dtype, every
shard (path relative to the manifest, split, source, docs, tokens, sha256), the totals (with
counts no shard holds, such as the empty documents skipped), the mixture weights (null until
a mixture is applied) and the command/config that made it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.errors import InputError, MissingInputError
from pipeline.core.files import atomic_write_json

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val")
DTYPES = ("uint16", "uint32")
SHARD_KEYS = ("path", "split", "source", "docs", "tokens", "sha256")
TOKENIZER_KEYS = ("path", "sha256", "vocab_size", "eos_id")


def build_manifest(
    *,
    tokenizer: dict,
    dtype: str,
    shards: list[dict],
    config: dict,
    command: str,
    counts: dict[str, int] | None = None,
) -> dict:
    """``counts`` are run-wide counts that no shard holds (e.g. ``skipped_empty`` documents); they
    join the totals."""
    shards = sorted(shards, key=lambda shard: shard["path"])
    by_split = {split: _count([s for s in shards if s["split"] == split]) for split in SPLITS}
    by_source = {
        source: _count([s for s in shards if s["source"] == source])
        for source in sorted({s["source"] for s in shards})
    }
    return {
        "format_version": FORMAT_VERSION,
        "tokenizer": tokenizer,
        "dtype": dtype,
        "shards": shards,
        "totals": {**_count(shards), **(counts or {}), "by_split": by_split, "by_source": by_source},
        "mixture": None,
        "command": command,
        "config": config,
    }


def write_manifest(directory: str | Path, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST_FILE
    return atomic_write_json(path, manifest)


def load_manifest(directory: str | Path) -> dict:
    """Read and check ``<directory>/manifest.json``; errors are one line naming the file."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise MissingInputError(f"no {MANIFEST_FILE} in {directory} (run `lmpipe data tokenize` first)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    _check(path, manifest)
    return manifest


def _check(path: Path, manifest: Any) -> None:
    def fail(message: str) -> None:
        raise InputError(f"{path}: {message}")

    if not isinstance(manifest, dict):
        fail("expected a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        fail(f"format_version is {manifest.get('format_version')!r}; this version reads {FORMAT_VERSION}")
    for key in ("tokenizer", "dtype", "shards", "totals"):
        if key not in manifest:
            fail(f"missing key '{key}'")
    missing = [key for key in TOKENIZER_KEYS if key not in manifest["tokenizer"]]
    if missing:
        fail(f"tokenizer lacks {', '.join(missing)}")
    if manifest["dtype"] not in DTYPES:
        fail(f"dtype is {manifest['dtype']!r}; valid: {', '.join(DTYPES)}")
    for i, shard in enumerate(manifest["shards"]):
        missing = [key for key in SHARD_KEYS if key not in shard]
        if missing:
            fail(f"shards[{i}] lacks {', '.join(missing)}")
        if not (path.parent / shard["path"]).is_file():
            fail(f"shards[{i}]: file {shard['path']} is missing")


def _count(shards: list[dict]) -> dict:
    return {"docs": sum(s["docs"] for s in shards), "tokens": sum(s["tokens"] for s in shards)}
