"""The files of checkpoint steps (``pipeline.train.checkpoint`` writes them): the record of a step's
files, checking a step against it, pruning old steps, and what a failed write means.

A step's ``checksums.json`` lists every file it was written with, its size and, up to a size limit, its
blake2b; it is the last file written into the staging directory, so a step directory that has one is
complete. ``verify_checkpoint`` checks sizes always (cheap, and what a full disk or an interrupted copy
breaks) and hashes where asked (a resume, a load).
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
from pathlib import Path

from torch.distributed.checkpoint.api import CheckpointException

from pipeline.core.errors import InputError, UserError
from pipeline.core.files import HASH_BLOCK, META_FILE, atomic_write_json

STEP_DIR = re.compile(r"step_(\d+)")
CHECKSUMS_FILE = "checksums.json"
"""A step's record of its files (size, blake2b or null), written into the staging directory last."""
DEFAULT_CHECKSUM_MAX_BYTES = 64 << 20
"""Files up to this size are hashed at save time; bigger ones (the weight shards of a large model)
only have their size recorded, so a save never spends minutes hashing (``checkpoint.checksum_max_mb``)."""
SETTING_ASIDE = (".pruned", ".replaced")
"""Suffixes of step directories renamed out of the way before they are deleted."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (a full disk, a quota): the job stops with one line, the
    checkpoints before it intact."""


FULL_DISK_BYTES = 1 << 20
"""Less room than this left where a checkpoint write failed: the disk is full (``write_problem``)."""
WRITE_ERRORS = (OSError, CheckpointException)
"""What a state-file write raises when the storage refuses it (DCP wraps each rank's OSError)."""


class CorruptCheckpointError(InputError):
    """A step directory whose files do not match its ``checksums.json`` (missing, truncated, changed)."""


def step_directories(root: Path) -> list[Path]:
    """The ``step_N/`` directories under ``root`` that have a meta.json, oldest first."""
    if not root.is_dir():
        return []
    steps = sorted(
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := STEP_DIR.fullmatch(p.name)) and (p / META_FILE).is_file()
    )
    return [p for _, p in steps]


def write_checksums(step_dir: Path, *, hash_max_bytes: int) -> None:
    """Record the size of every file under ``step_dir`` and the blake2b of those up to ``hash_max_bytes``
    in its ``checksums.json`` (atomically: it is the last file of a step; recording again replaces it)."""
    files = {}
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file() and p != step_dir / CHECKSUMS_FILE):
        size = path.stat().st_size
        files[path.relative_to(step_dir).as_posix()] = {
            "size": size,
            "blake2b": _blake2b(path) if size <= hash_max_bytes else None,
        }
    atomic_write_json(step_dir / CHECKSUMS_FILE, {"files": files})


def verify_checkpoint(step_dir: str | Path, *, hashes: bool = True) -> None:
    """Raise ``CorruptCheckpointError`` naming the first file of ``step_dir`` that is missing, of
    another size, or (``hashes``) of other contents than its ``checksums.json`` records. Files added
    after the save (a ZeRO step's universal conversion) are not checked; a step without the record
    (written before it existed, or by ``lmpipe hf import``) has nothing to be checked against."""
    step_dir = Path(step_dir)
    record = step_dir / CHECKSUMS_FILE
    if not record.is_file():
        return
    try:
        files = json.loads(record.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise CorruptCheckpointError(
            f"checkpoint {step_dir} is corrupt: {record} is unreadable ({exc})"
        ) from exc
    for name, entry in files.items():
        path = step_dir / name
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            problem = "is missing"
        elif size != entry["size"]:
            problem = f"has {size} bytes, {entry['size']} were written"
        elif hashes and entry["blake2b"] is not None and _blake2b(path) != entry["blake2b"]:
            problem = "does not match the checksum it was written with"
        else:
            continue
        raise CorruptCheckpointError(f"checkpoint {step_dir} is corrupt: {path} {problem}")


def _blake2b(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def prune(root: Path, keep: int, *, newest: int, spare: Path | None = None) -> None:
    """Once step ``newest`` is complete: delete all but the newest ``keep`` steps up to it (and ``spare``,
    the best), each renamed to a hidden name first, and what killed saves and prunes left (staging and
    set-aside directories). Steps past ``newest`` (left by a run that resumed from an earlier one) are
    for a later save to replace, not counted."""
    steps = sorted(
        (int(m.group(1)), p)
        for p in root.iterdir()
        if p.is_dir() and (m := STEP_DIR.fullmatch(p.name)) and int(m.group(1)) <= newest
    )
    for _, old in steps[:-keep]:
        if old != spare:
            old.rename(old.with_name(f".{old.name}.pruned"))
    for leftover in root.iterdir():
        if leftover.is_dir() and (leftover.name.endswith(SETTING_ASIDE) or leftover.name.endswith(".tmp")):
            shutil.rmtree(leftover)


def write_problem(error: BaseException, directory: Path) -> str:
    """One line on why a checkpoint write failed. A full disk is named as such: torch's writer often
    reports it only as a broken zip offset, and DCP wraps each rank's traceback in its exception."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = None
    if free is not None and free < FULL_DISK_BYTES or getattr(error, "errno", None) == errno.ENOSPC:
        return f"no space left on the device of {directory.parent} ({free or 0:,} bytes free)"
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__
