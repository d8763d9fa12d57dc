"""The GPU tests' session state: the tiny corpus of the CPU tests, and the jobs trained once and shared
(``gpu_helpers.TrainedRuns``). Both are built on first use, so a run without CUDA (every test skipped)
builds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpu_helpers import TrainedRuns

from pipeline.testing import make_tiny_corpus


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(shards_dir, sft_jsonl)."""
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def runs(tiny_corpus, tmp_path_factory) -> TrainedRuns:
    return TrainedRuns(tiny_corpus[0], tmp_path_factory.mktemp("gpu-runs"))
