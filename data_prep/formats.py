"""What format an input is, told from its name (or, for a local directory, its contents).

Kept apart from :mod:`data_prep.readers` so that :mod:`data_prep.inputs` (which the readers use to
open files) can classify inputs without importing the readers.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

PRE_EXTRACTED = frozenset({"wet", "wat", "jsonl", "parquet", "hf"})
"""Formats whose documents already hold plain text (``wat``: no documents at all): no extraction step."""


def is_hf_dataset(path: Path) -> bool:
    """A local directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and (
        (path / "dataset_info.json").is_file()
        and (path / "state.json").is_file()
        or (path / "dataset_dict.json").is_file()
    )


def detect_format(path: Path | str) -> str | None:
    """``auto`` by file name (a URL's path counts, its query does not).

    ``*.warc.wet[.gz]`` -> wet, ``*.warc.wat[.gz]`` -> wat, ``*.warc[.gz]`` -> warc,
    ``*.xml[.bz2|.gz]`` (and ``*.xml-p1p2.bz2`` parts) -> wiki, ``*.jsonl|.ndjson[.gz|.zst]`` -> jsonl,
    ``*.parquet`` -> parquet, a local ``save_to_disk`` directory -> hf.
    """
    text = str(path)
    if "://" in text:
        name = urllib.parse.urlsplit(text).path.rstrip("/").rpartition("/")[2].lower()
    else:
        if is_hf_dataset(Path(text)):
            return "hf"
        name = Path(text).name.lower()
    if name.endswith((".warc.wet", ".warc.wet.gz", ".wet.gz")):
        return "wet"
    if name.endswith((".warc.wat", ".warc.wat.gz", ".wat.gz")):
        return "wat"
    if name.endswith((".warc", ".warc.gz")):
        return "warc"
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".ndjson.gz", ".ndjson.zst")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if ".xml" in name and name.endswith((".xml", ".bz2", ".gz")):
        return "wiki"
    return None
