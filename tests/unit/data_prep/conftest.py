"""The shared real-data fixtures (Common Crawl, Wikipedia) of the data-prep unit tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# ../shared/fixtures beside the checkout (where CI puts it too); LMPIPE_FIXTURES points elsewhere.
FIXTURES = Path(
    os.environ.get("LMPIPE_FIXTURES", Path(__file__).resolve().parents[4] / "shared" / "fixtures")
)


@pytest.fixture
def shared_fixture() -> Callable[[str], Path]:
    """``shared_fixture("warc/x.warc.gz")``: a real Common Crawl / Wikipedia file; the test skips without it."""

    def find(relative: str) -> Path:
        path = FIXTURES / relative
        if not path.is_file():
            pytest.skip(f"shared fixture {path} not present")
        return path

    return find
