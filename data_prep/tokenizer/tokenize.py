"""Tokenize docs directories into train/val token shards plus manifest.json.

One task per input parquet file (numbered in sorted order over all inputs), so the
output does not depend on the number of workers or the executor. Tasks run as one
``tokenize`` stage on the data-prep executors: a local process pool or a Slurm job array
(whose elements run ``launch.slurm.task``). A task writes
``shards/<split>-<source>-<task>-<n>.arrow`` and, last, ``completions/<task>.done``
holding its shard entries and counts; a rerun skips tasks whose marker matches the
current settings and redoes the others from scratch. The manifest is assembled from the
markers at the end.

Documents get EOS appended (no BOS) and go to val when a hash of their id falls
below ``val_fraction``, which is stable across reruns, workers and input order. Empty
documents make no row; they are counted (``skipped_empty``). Special-token strings
inside a document's text are encoded as plain text, so a document cannot inject an EOS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from data_prep.executor import Progress, Stage
from data_prep.executor.local import LocalExecutor
from data_prep.executor.slurm import SlurmExecutor
from data_prep.tokenizer.config import TokenizeConfig
from data_prep.tokenizer.manifest import MANIFEST_FILE, build_manifest, write_manifest
from data_prep.tokenizer.shards import (
    SHARDS_SUBDIR,
    ShardWriter,
    shard_task,
    token_dtype,
)
from data_prep.tokenizer.special import HF_CONFIG_FILE, find_special_tokens
from data_prep.tokenizer.train import (
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_FILE,
    find_doc_files,
)
from pipeline.core.errors import InputError, MissingInputError
from pipeline.core.files import CONFIG_FILE, atomic_write_json, atomic_write_text, file_sha256

STAGE = "tokenize"
COMPLETIONS_SUBDIR = "completions"
DOC_COLUMNS = ("id", "text", "source")
SOURCE_PATTERN = re.compile(r"[A-Za-z0-9_]+")  # '-' separates the parts of a shard name
COUNTS = ("skipped_empty",)
"""Per-task counts of a done marker that the manifest totals add up."""


@dataclasses.dataclass(frozen=True)
class TokenizeTask:
    """Everything one worker needs (it is what a Slurm plan lists); ``settings`` are what a
    done marker must match to be reused."""

    index: int
    input: str
    output: str
    tokenizer: str
    tokenizer_sha256: str
    eos_id: int
    val_fraction: float
    shard_size_bytes: int
    batch_size: int

    @property
    def settings(self) -> dict:
        return {
            "input": self.input,
            "tokenizer_sha256": self.tokenizer_sha256,
            "eos_id": self.eos_id,
            "val_fraction": self.val_fraction,
            "shard_size_bytes": self.shard_size_bytes,
        }

    @property
    def marker(self) -> Path:
        return Path(self.output) / COMPLETIONS_SUBDIR / f"{self.index:05d}.done"


def split_of(doc_id: str, val_fraction: float) -> str:
    """'val' for a stable ``val_fraction`` share of ids (blake2b of the id), else 'train'."""
    digest = hashlib.blake2b(doc_id.encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") < val_fraction * 2**64 else "train"


def resolve_tokenizer(path: str | Path) -> Path:
    """``path`` is a tokenizer directory or its tokenizer.json."""
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise MissingInputError(f"tokenizer not found: {file}")
    return file


def tokenize(cfg: TokenizeConfig, progress: Progress | None = None) -> dict:
    """Tokenize ``cfg.input`` into ``cfg.output``; returns the manifest it wrote.

    ``progress`` is called with the number of documents each encoded batch added (executor
    local). Local workers import the calling script again, so a script that calls this with workers>1
    needs the ``if __name__ == "__main__":`` guard.
    """
    files = sorted({path.resolve() for docs_dir in cfg.input for path in find_doc_files(docs_dir)})
    output = Path(cfg.output)
    for subdir in (SHARDS_SUBDIR, COMPLETIONS_SUBDIR):
        (output / subdir).mkdir(parents=True, exist_ok=True)
    (output / MANIFEST_FILE).unlink(missing_ok=True)  # present only while it describes the shards
    source = resolve_tokenizer(cfg.tokenizer)
    tokenizer = load_tokenizer(source)
    special = find_special_tokens(tokenizer, source, eos=cfg.eos_token, bos=cfg.bos_token)
    tokenizer_file = _copy_tokenizer(source, output)
    tokenizer_sha256 = file_sha256(tokenizer_file)

    tasks = [
        TokenizeTask(
            index=i,
            input=str(path),
            output=str(output),
            tokenizer=str(tokenizer_file),
            tokenizer_sha256=tokenizer_sha256,
            eos_id=special.eos_id,
            val_fraction=cfg.val_fraction,
            shard_size_bytes=cfg.shard_size_bytes,
            batch_size=cfg.batch_size,
        )
        for i, path in enumerate(files)
    ]
    todo = [task for task in tasks if not is_done(task)]
    _make_executor(cfg).run_stages([Stage(STAGE, todo, run_task)], progress)

    markers = []
    for task in tasks:
        marker = _done_marker(task)
        if marker is None:
            raise RuntimeError(f"tokenize task {task.index} ({task.input}) left no valid {task.marker}")
        markers.append(marker)
    shards = [entry for marker in markers for entry in marker["shards"]]
    _remove_stale_shards(output, {shard["path"] for shard in shards})
    manifest = build_manifest(
        tokenizer={
            "path": tokenizer_file.name,
            "sha256": tokenizer_sha256,
            "vocab_size": tokenizer.get_vocab_size(),
            **special.manifest_entry(),
        },
        dtype=str(token_dtype(tokenizer.get_vocab_size())),
        shards=shards,
        config=cfg.to_dict(),
        command=shlex.join(sys.argv),
        counts={"input_files": len(tasks), **{key: sum(m.get(key, 0) for m in markers) for key in COUNTS}},
    )
    cfg.save(output / CONFIG_FILE)
    write_manifest(output, manifest)
    return manifest


def is_done(task: TokenizeTask) -> bool:
    return _done_marker(task) is not None


def run_task(task: TokenizeTask, progress: Progress | None = None) -> int:
    """Tokenize one parquet file; returns the number of documents written."""
    task.marker.unlink(missing_ok=True)
    for leftover in (Path(task.output) / SHARDS_SUBDIR).iterdir():
        if shard_task(leftover.name) == task.index:
            leftover.unlink()  # an unfinished earlier attempt; redo from scratch
    tokenizer = load_tokenizer(task.tokenizer)
    dtype = token_dtype(tokenizer.get_vocab_size())
    writers: dict[tuple[str, str], ShardWriter] = {}
    docs = skipped_empty = 0
    parquet = pq.ParquetFile(task.input)
    missing = set(DOC_COLUMNS) - set(parquet.schema_arrow.names)
    if missing:
        raise InputError(f"{task.input}: missing column(s) {', '.join(sorted(missing))}")
    for batch in parquet.iter_batches(batch_size=task.batch_size, columns=list(DOC_COLUMNS)):
        groups = _texts_by_key(batch, task)
        texts = [text for group in groups.values() for text in group]
        skipped_empty += batch.num_rows - len(texts)
        encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        tokens, lengths = flat_with_eos([encoding.ids for encoding in encodings], task.eos_id, dtype)
        token_offsets = np.concatenate(([0], np.cumsum(lengths)))
        doc_start = 0
        for key, group in groups.items():
            doc_end = doc_start + len(group)
            if key not in writers:
                writers[key] = ShardWriter(
                    task.output,
                    split=key[0],
                    source=key[1],
                    task=task.index,
                    dtype=dtype,
                    shard_size_bytes=task.shard_size_bytes,
                )
            writers[key].add(
                tokens[token_offsets[doc_start] : token_offsets[doc_end]], lengths[doc_start:doc_end]
            )
            doc_start = doc_end
        docs += len(texts)
        if progress is not None:
            progress(len(texts))
    entries = [entry for key in sorted(writers) for entry in writers[key].close()]
    marker = {**task.settings, "docs": docs, "skipped_empty": skipped_empty, "shards": entries}
    atomic_write_json(task.marker, marker)
    return docs


def flat_with_eos(
    token_lists: list[list[int]], eos_id: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """(concatenated tokens with EOS after each document, per-document lengths with the EOS).

    One pass over the ids into a typed array, then one vectorised insert: no per-document
    Python lists are built (this runs on every token of the corpus)."""
    lengths = np.fromiter(map(len, token_lists), np.int64, len(token_lists))
    values = np.fromiter(itertools.chain.from_iterable(token_lists), dtype, int(lengths.sum()))
    return np.insert(values, np.cumsum(lengths), np.asarray(eos_id, dtype)), lengths + 1


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer.json that encodes special-token strings in text as plain text."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a malformed file
        raise InputError(f"{path}: not a tokenizers tokenizer.json ({str(exc).splitlines()[0]})") from None
    tokenizer.encode_special_tokens = True
    return tokenizer


def _texts_by_key(batch: Any, task: TokenizeTask) -> dict[tuple[str, str], list[str]]:
    """The non-empty texts of a record batch grouped by (split, source), each group in file order.

    Encoding them group after group lets one flat token array be cut into per-writer slices."""
    groups: dict[tuple[str, str], list[str]] = {}
    ids, texts, sources = (batch.column(name).to_pylist() for name in DOC_COLUMNS)
    valid = {source for source in set(sources) if source and SOURCE_PATTERN.fullmatch(source)}
    for doc_id, text, source in zip(ids, texts, sources):
        if not text:
            continue
        if source not in valid:
            raise InputError(
                f"{task.input}: document {doc_id!r} has source {source!r}; "
                f"sources must match {SOURCE_PATTERN.pattern}"
            )
        groups.setdefault((split_of(doc_id, task.val_fraction), source), []).append(text)
    return groups


def _make_executor(cfg: TokenizeConfig) -> Any:
    """A local process pool, or Slurm job arrays whose elements run ``launch.slurm.task``."""
    if cfg.executor == "slurm":
        return SlurmExecutor(
            cfg.slurm,
            Path(cfg.output) / "slurm",
            cfg.to_dict(),
            lambda _stage, task: is_done(task),
        )
    return LocalExecutor(cfg.workers)


def _done_marker(task: TokenizeTask) -> dict | None:
    """The marker of a finished task, or None when it must (re)run."""
    try:
        marker = json.loads(task.marker.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if any(marker.get(key) != value for key, value in task.settings.items()):
        return None
    if not all((Path(task.output) / entry["path"]).is_file() for entry in marker.get("shards", [])):
        return None
    return marker


def _remove_stale_shards(output: Path, keep: set[str]) -> None:
    """Drop shards of tasks that no longer exist (e.g. a rerun over fewer input files)."""
    for path in (output / SHARDS_SUBDIR).glob("*.arrow"):
        if f"{SHARDS_SUBDIR}/{path.name}" not in keep:
            path.unlink()


def _copy_tokenizer(source: Path, output: Path) -> Path:
    """A copy of tokenizer.json, and of the transformers files beside it, next to the shards,
    so the directory is self-contained (and says which token is EOS)."""
    for name in (TOKENIZER_FILE, HF_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE):
        origin = source if name == TOKENIZER_FILE else source.with_name(name)
        target = output / name
        if origin.resolve() == target.resolve():
            continue
        if not origin.is_file():
            target.unlink(missing_ok=True)
            continue
        atomic_write_text(target, origin.read_text())
    return output / TOKENIZER_FILE
