"""Real Common Crawl and Wikipedia fixtures through the CLI: ``data prep`` (default recipe, many
languages) -> ``train-tokenizer`` -> ``tokenize``; every shard opens with ``datasets.Dataset.from_file``
and its rows decode back to the kept documents' text, each followed by EOS."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset, List, Value
from tokenizers import Tokenizer

from data_prep.tokenizer.tokenize import split_of
from pipeline.testing import SHARED_FIXTURES, require_fixture

REPO = Path(__file__).resolve().parents[2]
FIXTURES = SHARED_FIXTURES
LMPIPE = str(Path(sys.executable).with_name("lmpipe"))
LANGUAGES = "[en,bg,es,zh,ja,ru,nl,de,da,fr]"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("shared_fixtures_present"),
]


@pytest.fixture(scope="module")
def shared_fixtures_present() -> None:
    """Skip without the shared fixtures; fail under CI=true."""
    require_fixture("warc")
    require_fixture("wiki")


def lmpipe(*args: str) -> str:
    result = subprocess.run([LMPIPE, *args], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_fixture_docs_come_back_from_every_shard_through_datasets(tmp_path):
    prep, tok, out = tmp_path / "prep", tmp_path / "tok", tmp_path / "shards"
    lmpipe(
        "data",
        "prep",
        "--input",
        str(FIXTURES / "warc"),
        str(FIXTURES / "wiki"),
        "--output",
        str(prep),
        "--workers",
        "2",
        f"language.languages={LANGUAGES}",
        "quality.min_stop_words=0",  # Gopher's stop words are English
    )
    lmpipe("data", "train-tokenizer", "--input", str(prep), "--vocab-size", "2000", "--output", str(tok))
    summary = lmpipe(
        "data",
        "tokenize",
        "--input",
        str(prep),
        "--tokenizer",
        str(tok),
        "--output",
        str(out),
        "--workers",
        "2",
        "--shard-size-mb",
        "0.25",
        "val_fraction=0.1",
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert f"{len(manifest['shards'])} shards, {manifest['totals']['docs']:,} docs" in summary

    docs = [
        row for path in sorted((prep / "docs").glob("*.parquet")) for row in pq.read_table(path).to_pylist()
    ]
    expected = Counter((split_of(d["id"], 0.1), d["source"], d["text"]) for d in docs if d["text"])
    languages = {json.loads(d["metadata"])["language"] for d in docs}
    assert {"cc", "wiki"} <= {d["source"] for d in docs} and len(languages) >= 3, languages
    assert manifest["totals"]["docs"] == sum(expected.values()) > 50
    assert manifest["totals"]["skipped_empty"] == len(docs) - sum(expected.values())

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    eos = manifest["tokenizer"]["eos_id"]
    found: Counter = Counter()
    for shard in manifest["shards"]:
        dataset = Dataset.from_file(str(out / shard["path"]))
        assert dataset.features["input_ids"] == List(Value("uint16"))
        assert len(dataset) == shard["docs"]
        for ids in dataset["input_ids"]:
            assert ids[-1] == eos and eos not in ids[:-1]
            found[
                (shard["split"], shard["source"], tokenizer.decode(ids[:-1], skip_special_tokens=False))
            ] += 1
    assert found == expected
    assert len(manifest["shards"]) > 4  # --shard-size-mb took effect
