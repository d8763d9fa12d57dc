"""Arrow arrays built from their buffers, without ``pa.array``.

Every ``pa.array`` call (on a list or on a numpy array alike) first asks whether its argument is a pandas
object, and to ask, pyarrow 25 imports pandas: ~0.3 CPU seconds the first time in each process. So do
``pa.scalar`` (a Python value in a compute call, ``pc.equal(texts, "")``) and ``to_numpy``. The prep and
tokenize paths never use pandas, yet each pool worker paid that on its first shard, more than a small
input takes to prep. Arrays built from (or read through) their buffers are the same and import nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_STRING_BYTES = 2**31 - 1
"""What ``pa.string()``'s 32-bit offsets can address in one array."""


def string_array(values: Sequence[str]) -> pa.StringArray:
    """``pa.array(values, pa.string())`` for a list of str (no nulls); a str that cannot be UTF-8 (a lone
    surrogate) raises UnicodeEncodeError, as ``pa.array`` does."""
    encoded = [value.encode() for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    if offsets[-1] > MAX_STRING_BYTES:
        raise ValueError(f"{offsets[-1]:,} bytes of text do not fit one string array (at most 2 GiB)")
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(encoded), buffers)


def numeric_array(values: np.ndarray) -> pa.Array:
    """``pa.array(values)`` for a 1-D numpy array of numbers (no nulls), sharing its memory."""
    values = np.ascontiguousarray(values)
    if values.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {values.shape}")
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def integers(array: pa.Array, null: int = 0) -> np.ndarray:
    """``array.fill_null(null).to_numpy()`` for an integer array (both import pandas), from its buffers."""
    kind = "i" if pa.types.is_signed_integer(array.type) else "u"
    dtype = np.dtype(f"<{kind}{array.type.bit_width // 8}")
    values = np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * dtype.itemsize)
    if not array.null_count:
        return values
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], np.uint8), bitorder="little")
    return np.where(bits[array.offset : array.offset + len(array)].astype(bool), values, null)


def nonempty(strings: pa.Array) -> pa.BooleanArray:
    """``pc.not_equal(strings, "")``, whose Python scalar would import pandas."""
    return pc.cast(pc.binary_length(strings), pa.bool_())
