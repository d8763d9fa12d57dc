"""Texts folded for dedup: lowercased, every run of characters that are not letters, digits or marks
turned into one space, trimmed. Exact dedup hashes the folded texts and MinHash shingles their words,
so "same words, other case, spacing or punctuation" collide.

The definition is RE2's: in Arrow, ``utf8_trim_whitespace(replace_substring_regex(utf8_lower(texts),
"[^\\p{L}\\p{N}\\p{M}]+", " "))``. But RE2 compiles that pattern on every call, and its Unicode
classes take 3-5 ms to compile: more than folding a small input's documents, paid by every task.
So each call replaces an explicit class instead: the ASCII characters that are not ``[a-z0-9]``,
plus the non-ASCII characters that occur in this batch and are not letters, digits or marks (RE2
decides those once per code point and process, so the result is byte for byte the same). That
class is a few dozen characters for a batch of web pages and compiles in ~0.1 ms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.arrays import string_array

LETTER_LIKE = r"^[\p{L}\p{N}\p{M}]$"
"""What folding keeps: letters, digits and marks, as RE2's Unicode tables have them."""
_ASCII_OTHERS = r"\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f"
"""ASCII that is neither a letter nor a digit (upper case included: it is lowered first)."""
_known: dict[int, bool] = {}
"""Non-ASCII code points RE2 has classified in this process: True for a letter, digit or mark."""


def fold_texts(texts: Sequence[str] | pa.Array) -> pa.Array:
    """The folded form of every text (see the module docstring), as a string array."""
    texts = texts if isinstance(texts, pa.Array) else string_array(texts)
    lowered = pc.utf8_lower(texts)
    others = "".join(f"\\x{{{point:x}}}" for point in _non_ascii_others(lowered))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, f"[{_ASCII_OTHERS}{others}]+", " "))


def _non_ascii_others(texts: pa.Array) -> list[int]:
    """The distinct non-ASCII code points in ``texts`` that are not letters, digits or marks."""
    data = texts.buffers()[2]
    if data is None:
        return []
    raw = np.frombuffer(data, np.uint8)  # the whole buffer: a slice's neighbours only add points
    leads = np.flatnonzero(raw >= 0xC0)  # the first byte of every multi-byte character
    if not len(leads):
        return []
    points = np.unique(_code_points(raw, leads)).tolist()
    new = [point for point in points if point not in _known]
    if new:
        verdicts = pc.match_substring_regex(string_array([chr(point) for point in new]), LETTER_LIKE)
        _known.update(zip(new, verdicts.to_pylist()))
    return [point for point in points if not _known[point]]


def _code_points(raw: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """The code point of each multi-byte UTF-8 character that starts at ``leads`` (valid UTF-8: its
    continuation bytes are there; the clip only keeps a shorter character's unused reads in range)."""
    last = len(raw) - 1
    b0, b1, b2, b3 = (raw[np.minimum(leads + k, last)].astype(np.int64) for k in range(4))
    two = ((b0 & 0x1F) << 6) | (b1 & 0x3F)
    three = ((b0 & 0x0F) << 12) | ((b1 & 0x3F) << 6) | (b2 & 0x3F)
    four = ((b0 & 0x07) << 18) | ((b1 & 0x3F) << 12) | ((b2 & 0x3F) << 6) | (b3 & 0x3F)
    return np.where(b0 >= 0xF0, four, np.where(b0 >= 0xE0, three, two))
