"""Files every part writes or finds the same way: atomic writes, content hashes, and the names and
exit codes that other parts (loaders, launchers, Slurm scripts) rely on."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

CONFIG_FILE = "config.yaml"
"""The resolved config a run, a prep output or a checkpoint step keeps beside its output."""
META_FILE = "meta.json"
"""A checkpoint step's description: step, model shape, tokenizer, strategy, LoRA adapters."""
LATEST_FILE = "latest"
"""Names the newest complete checkpoint step; written last, so it never points at a partial one."""
TOKENIZER_FILE = "tokenizer.json"

EXIT_PREEMPTED = 75
"""A job stopped on SIGTERM/SIGUSR2 after checkpointing (EX_TEMPFAIL): launchers requeue it."""

HASH_BLOCK = 8 << 20
"""Bytes per read when hashing: large files never sit in memory whole."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a hidden temp file beside ``path``, then rename it over ``path``: a reader
    (or a rerun after a kill) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """``with atomic_open(path) as f:`` writes a hidden temp file beside ``path`` and renames it over
    ``path`` when the block ends without an exception: for writers that want a file object
    (``np.save``), with the same guarantee as ``atomic_write_text``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, mode) as f:
        yield f
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """``atomic_write_text`` of ``data`` as UTF-8 JSON, one trailing newline: indented for people, or on
    one line (``indent=None``) for files only programs read, which Python encodes in C, several times
    faster than indented."""
    return atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
