"""The fault-injection tests' corpus; their helpers are in ``faultjobs.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.testing import make_tiny_corpus


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(shards_dir, sft_jsonl)."""
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))
