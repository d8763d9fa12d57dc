"""Tokenize docs directories into train/val token shards plus manifest.json.

One task per input parquet file (numbered in sorted order over all inputs), so the
output does not depend on the number of workers. A task writes
``shards/<split>-<source>-<task>-<n>.arrow`` and, last, ``completions/<task>.done``
holding its shard entries; a rerun skips tasks whose marker matches the current
settings and redoes the others from scratch. The manifest is assembled from the
markers at the end.

Documents get EOS appended (no BOS) and go to val when a hash of their id falls
below ``val_fraction``, which is stable across reruns, workers and input order.
Special-token strings inside a document's text are encoded as plain text, so a
document cannot inject an EOS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from data_prep.tokenizer.config import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, TokenizeConfig
from data_prep.tokenizer.manifest import MANIFEST_FILE, build_manifest, write_manifest
from data_prep.tokenizer.shards import SHARDS_SUBDIR, ShardWriter, file_sha256, token_dtype
from data_prep.tokenizer.train import TOKENIZER_FILE, find_doc_files

COMPLETIONS_SUBDIR = "completions"
DOC_COLUMNS = ("id", "text", "source")
SOURCE_PATTERN = re.compile(r"[A-Za-z0-9_]+")  # '-' separates the parts of a shard name


@dataclasses.dataclass(frozen=True)
class TokenizeTask:
    """Everything one worker needs; ``settings`` are what a done marker must match to be reused."""

    index: int
    input: str
    output: str
    tokenizer: str
    tokenizer_sha256: str
    val_fraction: float
    shard_size_bytes: int
    batch_size: int

    @property
    def settings(self) -> dict:
        return {"input": self.input, "tokenizer_sha256": self.tokenizer_sha256,
                "val_fraction": self.val_fraction, "shard_size_bytes": self.shard_size_bytes}

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
        raise FileNotFoundError(f"tokenizer not found: {file}")
    return file


def tokenize(cfg: TokenizeConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Tokenize ``cfg.input`` into ``cfg.output``; returns the manifest it wrote.

    ``progress`` is called with the number of documents each finished batch (workers=1)
    or task (workers>1) added. Workers are spawned processes, so a script that calls
    this with workers>1 needs the ``if __name__ == "__main__":`` guard.
    """
    files = sorted({path.resolve() for docs_dir in cfg.input for path in find_doc_files(docs_dir)})
    output = Path(cfg.output)
    for subdir in (SHARDS_SUBDIR, COMPLETIONS_SUBDIR):
        (output / subdir).mkdir(parents=True, exist_ok=True)
    (output / MANIFEST_FILE).unlink(missing_ok=True)  # present only while it describes the shards
    tokenizer_file = _copy_tokenizer(resolve_tokenizer(cfg.tokenizer), output)
    tokenizer = _load_tokenizer(tokenizer_file)
    tokenizer_sha256 = file_sha256(tokenizer_file)

    tasks = [TokenizeTask(index=i, input=str(path), output=str(output), tokenizer=str(tokenizer_file),
                          tokenizer_sha256=tokenizer_sha256, val_fraction=cfg.val_fraction,
                          shard_size_bytes=cfg.shard_size_bytes, batch_size=cfg.batch_size)
             for i, path in enumerate(files)]
    todo = [task for task in tasks if _done_entries(task) is None]
    if cfg.workers == 1 or len(todo) <= 1:
        for task in todo:
            run_task(task, progress)
    else:
        workers = min(cfg.workers, len(todo))
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                 initializer=_limit_threads, initargs=(threads,)) as pool:
            for future in as_completed([pool.submit(run_task, task) for task in todo]):
                docs = future.result()
                if progress is not None:
                    progress(docs)

    shards = []
    for task in tasks:
        entries = _done_entries(task)
        if entries is None:
            raise RuntimeError(f"tokenize task {task.index} ({task.input}) left no valid {task.marker}")
        shards += entries
    _remove_stale_shards(output, {shard["path"] for shard in shards})
    manifest = build_manifest(
        tokenizer={
            "path": tokenizer_file.name,
            "sha256": tokenizer_sha256,
            "vocab_size": tokenizer.get_vocab_size(),
            "eos_id": tokenizer.token_to_id(EOS_TOKEN),
            "bos_id": tokenizer.token_to_id(BOS_TOKEN),
            "pad_id": tokenizer.token_to_id(PAD_TOKEN),
        },
        dtype=str(token_dtype(tokenizer.get_vocab_size())),
        shards=shards,
        config=cfg.to_dict(),
        command=shlex.join(sys.argv),
    )
    cfg.save(output / "config.yaml")
    write_manifest(output, manifest)
    return manifest


def run_task(task: TokenizeTask, progress: Callable[[int], None] | None = None) -> int:
    """Tokenize one parquet file; returns the number of documents written."""
    task.marker.unlink(missing_ok=True)
    for leftover in (Path(task.output) / SHARDS_SUBDIR).glob(f"*-{task.index:05d}-*"):
        leftover.unlink()  # an unfinished earlier attempt; redo from scratch
    tokenizer = _load_tokenizer(task.tokenizer)
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    dtype = token_dtype(tokenizer.get_vocab_size())
    writers: dict[tuple[str, str], ShardWriter] = {}
    docs = skipped_empty = 0
    parquet = pq.ParquetFile(task.input)
    missing = set(DOC_COLUMNS) - set(parquet.schema_arrow.names)
    if missing:
        raise ValueError(f"{task.input}: missing column(s) {', '.join(sorted(missing))}")
    for batch in parquet.iter_batches(batch_size=task.batch_size, columns=list(DOC_COLUMNS)):
        texts, keys = _texts_and_keys(batch, task)
        skipped_empty += batch.num_rows - len(texts)
        encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        for key in dict.fromkeys(keys):
            if key not in writers:
                writers[key] = ShardWriter(task.output, split=key[0], source=key[1], task=task.index,
                                           dtype=dtype, shard_size_bytes=task.shard_size_bytes)
            token_lists = [encoding.ids for encoding, k in zip(encodings, keys) if k == key]
            writers[key].add(*_flat_with_eos(token_lists, eos_id, dtype))
        docs += len(texts)
        if progress is not None:
            progress(len(texts))
    entries = [entry for key in sorted(writers) for entry in writers[key].close()]
    marker = {**task.settings, "docs": docs, "skipped_empty": skipped_empty, "shards": entries}
    tmp = task.marker.with_name(f".{task.marker.name}.tmp")
    tmp.write_text(json.dumps(marker, indent=1))
    os.replace(tmp, task.marker)
    return docs


def _texts_and_keys(batch, task: TokenizeTask) -> tuple[list[str], list[tuple[str, str]]]:
    """The non-empty texts of a record batch, each with its (split, source)."""
    texts, keys = [], []
    ids, all_texts, sources = (batch.column(name).to_pylist() for name in DOC_COLUMNS)
    for doc_id, text, source in zip(ids, all_texts, sources):
        if not text:
            continue
        if not SOURCE_PATTERN.fullmatch(source or ""):
            raise ValueError(f"{task.input}: document {doc_id!r} has source {source!r}; "
                             f"sources must match {SOURCE_PATTERN.pattern}")
        texts.append(text)
        keys.append((split_of(doc_id, task.val_fraction), source))
    return texts, keys


def _flat_with_eos(token_lists: list[list[int]], eos_id: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(concatenated tokens with EOS after each document, per-document lengths)."""
    lengths = np.fromiter((len(ids) + 1 for ids in token_lists), np.int64, len(token_lists))
    tokens = np.fromiter(itertools.chain.from_iterable(ids + [eos_id] for ids in token_lists), dtype, int(lengths.sum()))
    return tokens, lengths


def _done_entries(task: TokenizeTask) -> list[dict] | None:
    """The shard entries of a finished task, or None when it must (re)run."""
    try:
        marker = json.loads(task.marker.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if any(marker.get(key) != value for key, value in task.settings.items()):
        return None
    entries = marker.get("shards", [])
    if not all((Path(task.output) / entry["path"]).is_file() for entry in entries):
        return None
    return entries


def _remove_stale_shards(output: Path, keep: set[str]) -> None:
    """Drop shards of tasks that no longer exist (e.g. a rerun over fewer input files)."""
    for path in (output / SHARDS_SUBDIR).glob("*.arrow"):
        if f"{SHARDS_SUBDIR}/{path.name}" not in keep:
            path.unlink()


def _load_tokenizer(path: str | Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.encode_special_tokens = True
    if tokenizer.token_to_id(EOS_TOKEN) is None:
        raise ValueError(f"{path}: tokenizer has no {EOS_TOKEN} token")
    return tokenizer


def _copy_tokenizer(source: Path, output: Path) -> Path:
    """A copy of tokenizer.json next to the shards, so the directory is self-contained."""
    target = output / TOKENIZER_FILE
    if source.resolve() != target.resolve():
        tmp = target.with_name(f".{TOKENIZER_FILE}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return target


def _limit_threads(threads: int) -> None:
    """Each worker process gets its share of the cores for the tokenizer's thread pool."""
    os.environ["RAYON_NUM_THREADS"] = str(threads)
