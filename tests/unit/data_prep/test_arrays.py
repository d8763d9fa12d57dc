"""Arrow arrays from their buffers equal pyarrow's own conversions, and a prep worker never imports pandas
(pyarrow's conversions would: ~0.3 CPU-s on each worker's first shard)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from data_prep.arrays import integers, nonempty, numeric_array, string_array
from pipeline.testing import require_fixture


def test_string_array_equals_pa_array_for_unicode_empty_and_long_texts():
    texts = ["", "plain", "naïve café — 東京", "x" * 100_000, "\n\t "]
    built = string_array(texts)
    assert built.equals(pa.array(texts, pa.string()))
    assert built.to_pylist() == texts
    assert string_array([]).equals(pa.array([], pa.string()))


def test_a_text_that_is_not_utf8_fails_as_pa_array_does():
    with pytest.raises(UnicodeEncodeError):
        string_array(["ok", "lone \udc80 surrogate"])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64, np.float64])
def test_numeric_array_equals_pa_array(dtype):
    values = np.arange(7, dtype=dtype)[::2]  # not contiguous: copied, not viewed
    assert numeric_array(values).equals(pa.array(values))


def test_integers_fills_nulls_and_honours_a_slice_offset():
    array = pa.array([5, None, 7, None, 9, 10, None, 12, 13], pa.int32()).slice(1, 7)
    assert integers(array, null=-1).tolist() == array.fill_null(-1).to_pylist()
    lengths = pc.list_value_length(pa.array([["a"], None, ["b", "c"]], pa.list_(pa.string())))
    assert integers(lengths).tolist() == [1, 0, 2]


def test_nonempty_is_not_equal_to_the_empty_string():
    texts = pa.array(["", "a", "", "bc"], pa.string()).slice(1)
    assert nonempty(texts).to_pylist() == pc.not_equal(texts, "").to_pylist()


def test_prep_with_dedup_never_imports_pandas(tmp_path):
    """A pool worker starts with what the forkserver imported; pandas is not among it, and nothing in the
    prep path (extraction, filters, parquet writes, dedup keys, clustering, rewrite) may pull it in."""
    warcs = require_fixture("warc")
    for copy in ("a", "b"):  # each page twice: the dedup stage rewrites shards instead of linking them
        (tmp_path / copy).mkdir()
        for warc in warcs.glob("*.warc.gz"):
            shutil.copy(warc, tmp_path / copy / warc.name)
    script = textwrap.dedent(
        f"""
        import glob, sys
        from data_prep.config import PrepConfig
        from data_prep.prep import run_prep
        inputs = sorted(glob.glob("{tmp_path}/*/*.warc.gz"))
        stats = run_prep(PrepConfig(input=inputs, output="{tmp_path / "out"}"))
        assert stats["totals"]["kept"] > 0, stats["totals"]
        assert stats["stages"]["dedup"]["dropped"]["duplicate"] > 0, stats["stages"]["dedup"]
        print("pandas" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
