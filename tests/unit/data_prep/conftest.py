"""The shared real-data fixtures (Common Crawl, Wikipedia) of the data-prep unit tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.testing import require_fixture


@pytest.fixture
def shared_fixture() -> Callable[[str], Path]:
    """``shared_fixture("warc/x.warc.gz")``: a real Common Crawl / Wikipedia file; the test skips
    without it (fails under CI=true)."""
    return require_fixture
