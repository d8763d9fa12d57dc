"""A small generated corpus shared by the data-prep unit tests, and the shared real-data fixtures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from data_prep.corpus import CorpusFiles, generate_corpus

# ../shared/fixtures beside the checkout (where CI puts it too); LMPIPE_FIXTURES points elsewhere.
FIXTURES = Path(os.environ.get("LMPIPE_FIXTURES", Path(__file__).resolve().parents[4] / "shared" / "fixtures"))


@pytest.fixture
def shared_fixture() -> Callable[[str], Path]:
    """``shared_fixture("warc/x.warc.gz")``: a real Common Crawl / Wikipedia file; the test skips without it."""

    def find(relative: str) -> Path:
        path = FIXTURES / relative
        if not path.is_file():
            pytest.skip(f"shared fixture {path} not present")
        return path

    return find


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> CorpusFiles:
    return generate_corpus(tmp_path_factory.mktemp("corpus"), seed=11, n_entities=40)
