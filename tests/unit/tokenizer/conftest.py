"""Docs directories in the data-prep layout (docs/*.parquet) and a tokenizer trained on one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.tokenizer.config import TokenizerTrainConfig
from data_prep.tokenizer.train import train_tokenizer

SUBJECTS = [
    "The river",
    "A small town",
    "Our model",
    "The old library",
    "Every student",
    "The committee",
    "She",
    "They",
]
VERBS = ["describes", "visited", "measured", "built", "remembers", "translated", "ignored", "studies"]
OBJECTS = [
    "the northern bridge",
    "a quiet café",
    "three thousand books",
    "the naïve theory",
    "東京の地図",
    "an unusual result 🙂",
    "the data  set",
    "its 1,024 pages",
    "the <|eos|> marker",
]
TAILS = [
    " in 1887.",
    " last winter.",
    ", again and again.",
    "!",
    "?",
    " — or so it seems.",
    ".\n",
    ".\n\n",
    ".\t",
]


def make_text(rng: random.Random) -> str:
    sentences = [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
        for _ in range(rng.randint(1, 12))
    ]
    return " ".join(sentences)


def write_docs(path: Path, docs: list[dict]) -> Path:
    """One parquet file with the data-prep columns; ``docs`` carry id, text, source."""
    table = pa.table(
        {
            "id": [d["id"] for d in docs],
            "text": [d["text"] for d in docs],
            "source": [d["source"] for d in docs],
            "url": [f"https://example.org/{d['id']}" for d in docs],
            "metadata": [json.dumps({"n": i}) for i, _ in enumerate(docs)],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path


def make_docs_dir(root: Path, *, files: int = 3, docs_per_file: int = 60, seed: int = 0) -> Path:
    """``files`` parquet files under ``root/docs``; sources alternate and mix within files."""
    rng = random.Random(seed)
    for f in range(files):
        docs = [
            {"id": f"doc-{f}-{i}", "text": make_text(rng), "source": "cc" if (f + i) % 3 else "wiki"}
            for i in range(docs_per_file)
        ]
        write_docs(root / "docs" / f"{f:05d}-00000.parquet", docs)
    return root


@pytest.fixture(name="write_docs")
def write_docs_fixture():
    return write_docs


@pytest.fixture(name="make_docs_dir")
def make_docs_dir_fixture():
    return make_docs_dir


@pytest.fixture(scope="session")
def docs_dir(tmp_path_factory) -> Path:
    return make_docs_dir(tmp_path_factory.mktemp("prep"))


@pytest.fixture(scope="session")
def tokenizer_file(docs_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("tokenizer")
    return train_tokenizer(TokenizerTrainConfig(input=str(docs_dir), output=str(output), vocab_size=400))
