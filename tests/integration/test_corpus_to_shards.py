"""Demo corpus -> docs -> shards: every document the prep stage kept comes back exactly from its
shard row, read with ``datasets.Dataset.from_file``."""

from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset, List, Value
from tokenizers import Tokenizer

from data_prep.config import PrepConfig
from data_prep.prep import run_prep
from data_prep.tokenizer.config import TokenizeConfig, TokenizerTrainConfig
from data_prep.tokenizer.tokenize import split_of, tokenize
from data_prep.tokenizer.train import train_tokenizer
from pipeline.demo.corpus import generate_corpus


def test_shard_rows_decode_to_the_cleaned_text(tmp_path: Path):
    corpus = generate_corpus(tmp_path / "corpus", seed=3, n_entities=120)
    prep = PrepConfig(input=[str(corpus.warc), str(corpus.wiki)], output=str(tmp_path / "data"))
    stats = run_prep(prep)
    train_tokenizer(TokenizerTrainConfig(input=prep.output, output=str(tmp_path / "tok"), vocab_size=1024))
    tok_cfg = TokenizeConfig(
        input=[prep.output],
        tokenizer=str(tmp_path / "tok"),
        output=str(tmp_path / "shards"),
        val_fraction=0.1,
    )
    manifest = tokenize(tok_cfg)

    docs = pq.read_table(sorted((tmp_path / "data" / "docs").glob("*.parquet"))).to_pylist()
    assert len(docs) == stats["totals"]["kept"] == manifest["totals"]["docs"]
    assert {doc["source"] for doc in docs} == {"cc", "wiki"}

    tokenizer = Tokenizer.from_file(str(tmp_path / "shards" / "tokenizer.json"))
    eos = manifest["tokenizer"]["eos_id"]
    rows: dict[tuple[str, str], list[list[int]]] = {}
    for shard in manifest["shards"]:  # through datasets, unchanged, as a user would open them
        dataset = Dataset.from_file(str(tmp_path / "shards" / shard["path"]))
        assert dataset.features["input_ids"] == List(Value("uint16"))
        rows.setdefault((shard["split"], shard["source"]), []).extend(dataset["input_ids"])

    # Within one split and source, shard rows keep the order of the docs files.
    expected: dict[tuple[str, str], list[str]] = {}
    for doc in docs:
        expected.setdefault((split_of(doc["id"], tok_cfg.val_fraction), doc["source"]), []).append(
            doc["text"]
        )
    assert rows.keys() == expected.keys()
    for key, texts in expected.items():
        assert len(rows[key]) == len(texts)
        for ids, text in zip(rows[key], texts):
            assert ids[-1] == eos and eos not in ids[:-1]
            assert tokenizer.decode(ids[:-1], skip_special_tokens=False) == text
