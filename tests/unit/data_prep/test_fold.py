"""Folding for dedup builds its character class per batch (RE2 compiles Unicode classes slowly, on
every call); the result must be byte for byte RE2's Unicode-class definition."""

from __future__ import annotations

import random

import pyarrow.compute as pc

from data_prep.arrays import string_array
from data_prep.dedup.fold import fold_texts

DEFINITION = r"[^\p{L}\p{N}\p{M}]+"


def by_definition(texts):
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(texts), DEFINITION, " "))


def test_fold_equals_the_unicode_class_definition_on_every_script():
    rng = random.Random(0)
    points = [*range(32, 127), 0xA0, 0xE9, 0x130, 0x301, 0x3A3, 0x5D0, 0x627, 0x660, 0x2019, 0x2028]
    points += [0x3001, 0x4E2D, 0xFEFF, 0xFF10, 0x200B, 0x1F600, 0x1D400, 0x10400, 0x1F1FA, 0xE000]
    texts = ["", " ", "!!", "a", "É", "İstanbul", "naïve café — ‘quoted’ 😀 x²"]
    texts += ["".join(chr(rng.choice(points)) for _ in range(rng.randint(0, 60))) for _ in range(2000)]
    array = string_array(texts)
    assert fold_texts(array).to_pylist() == by_definition(array).to_pylist()
    assert fold_texts(array[700:750]).to_pylist() == by_definition(array[700:750]).to_pylist()
    assert fold_texts(["Hello,  WORLD!\u00a0Naïve…"]).to_pylist() == ["hello world naïve"]
