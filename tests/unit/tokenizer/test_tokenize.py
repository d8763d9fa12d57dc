import json

import numpy as np
import pyarrow as pa
import pytest
from tokenizers import Tokenizer

from data_prep.summary import summarize_manifest
from data_prep.tokenizer.config import TokenizeConfig
from data_prep.tokenizer.tokenize import flat_with_eos, split_of, tokenize
from pipeline.core.files import file_sha256


def config(docs_dir, tokenizer_file, output, **overrides) -> TokenizeConfig:
    return TokenizeConfig(
        input=[str(docs_dir)], tokenizer=str(tokenizer_file.parent), output=str(output), **overrides
    )


def rows(path) -> list[list[int]]:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().column("input_ids").to_pylist()


def test_split_of_is_stable_and_near_the_fraction():
    ids = [f"doc-{i}" for i in range(20000)]
    splits = [split_of(doc_id, 0.1) for doc_id in ids]
    assert splits == [split_of(doc_id, 0.1) for doc_id in ids]
    assert 0.09 < splits.count("val") / len(ids) < 0.11
    assert all(split_of(doc_id, 0.0) == "train" for doc_id in ids[:100])
    # Growing the fraction only moves documents from train to val.
    assert all(split_of(d, 0.2) == "val" for d, s in zip(ids, splits) if s == "val")


def test_layout_manifest_and_progress(tmp_path, docs_dir, tokenizer_file):
    seen = []
    manifest = tokenize(
        config(docs_dir, tokenizer_file, tmp_path, val_fraction=0.2, batch_size=16), seen.append
    )
    assert (tmp_path / "tokenizer.json").read_bytes() == tokenizer_file.read_bytes()
    assert TokenizeConfig.load(tmp_path / "config.yaml").val_fraction == 0.2
    assert sorted(p.name for p in (tmp_path / "completions").iterdir()) == [
        "00000.done",
        "00001.done",
        "00002.done",
    ]
    assert sum(seen) == manifest["totals"]["docs"] == 180 and max(seen) <= 16
    assert manifest["tokenizer"] == {
        "path": "tokenizer.json",
        "sha256": file_sha256(tokenizer_file),
        "vocab_size": 400,
        "eos_id": 1,
        "bos_id": 0,
        "pad_id": 2,
        "eos_token": "<|eos|>",
        "bos_token": "<|bos|>",
        "pad_token": "<|pad|>",
    }
    assert manifest["totals"]["input_files"] == 3 and manifest["totals"]["skipped_empty"] == 0
    assert manifest["dtype"] == "uint16"
    assert {(s["split"], s["source"]) for s in manifest["shards"]} == {
        ("train", "cc"),
        ("train", "wiki"),
        ("val", "cc"),
        ("val", "wiki"),
    }
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest


def test_rerun_skips_done_tasks_and_redoes_unfinished_ones(tmp_path, docs_dir, tokenizer_file):
    cfg = config(docs_dir, tokenizer_file, tmp_path)
    first = tokenize(cfg)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").iterdir()}
    # Task 1 "crashed": no marker, a half-written temp file and a stray shard of its own.
    (tmp_path / "completions" / "00001.done").unlink()
    (tmp_path / "shards" / ".train-cc-00001-00000.arrow.tmp").write_bytes(b"partial")
    (tmp_path / "shards" / "train-cc-00001-00099.arrow").write_bytes(b"stale")
    seen = []
    second = tokenize(cfg, seen.append)
    assert second["shards"] == first["shards"]
    assert sum(seen) == 60  # only task 1 ran again
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "shards").iterdir()}
    assert after.keys() == before.keys()
    assert all(after[name] == before[name] for name in before if "-00001-" not in name)


def test_changed_settings_redo_the_tasks(tmp_path, docs_dir, tokenizer_file):
    tokenize(config(docs_dir, tokenizer_file, tmp_path, val_fraction=0.0))
    manifest = tokenize(config(docs_dir, tokenizer_file, tmp_path, val_fraction=0.5))
    assert manifest["totals"]["by_split"]["val"]["docs"] > 0
    assert {p.name for p in (tmp_path / "shards").iterdir()} == {s["path"][7:] for s in manifest["shards"]}


def test_fewer_inputs_on_rerun_drop_stale_shards(tmp_path, tokenizer_file, make_docs_dir):
    docs = make_docs_dir(tmp_path / "prep", files=2, docs_per_file=5)
    tokenize(config(docs, tokenizer_file, tmp_path / "out"))
    (docs / "docs" / "00001-00000.parquet").unlink()
    manifest = tokenize(config(docs, tokenizer_file, tmp_path / "out"))
    assert {p.name for p in (tmp_path / "out" / "shards").iterdir()} == {
        s["path"][7:] for s in manifest["shards"]
    }
    assert manifest["totals"]["docs"] == 5


def test_special_token_text_stays_text_and_empty_docs_are_skipped(tmp_path, tokenizer_file, write_docs):
    text = "Stop <|eos|> here <|bos|>"
    write_docs(
        tmp_path / "prep" / "docs" / "a.parquet",
        [{"id": "a", "text": text, "source": "cc"}, {"id": "b", "text": "", "source": "cc"}],
    )
    manifest = tokenize(config(tmp_path / "prep", tokenizer_file, tmp_path / "out", val_fraction=0.0))
    [shard] = manifest["shards"]
    [row] = rows(tmp_path / "out" / shard["path"])
    assert row.count(1) == 1 and row[-1] == 1 and 0 not in row
    assert Tokenizer.from_file(str(tokenizer_file)).decode(row[:-1]) == text
    marker = json.loads((tmp_path / "out" / "completions" / "00000.done").read_text())
    assert marker["docs"] == 1 and marker["skipped_empty"] == 1
    assert manifest["totals"]["docs"] == 1 and manifest["totals"]["skipped_empty"] == 1
    assert "1 empty docs skipped" in summarize_manifest(manifest)


def test_rerun_removes_only_its_own_leftovers_when_sources_look_like_task_numbers(
    tmp_path, tokenizer_file, write_docs
):
    # Task 0's source is "00001", so its shard train-00001-00000-00000.arrow contains "-00001-".
    write_docs(
        tmp_path / "prep" / "docs" / "a.parquet", [{"id": "a", "text": "first file", "source": "00001"}]
    )
    write_docs(tmp_path / "prep" / "docs" / "b.parquet", [{"id": "b", "text": "second file", "source": "cc"}])
    cfg = config(tmp_path / "prep", tokenizer_file, tmp_path / "out", val_fraction=0.0)
    first = tokenize(cfg)
    shards = tmp_path / "out" / "shards"
    assert (shards / "train-00001-00000-00000.arrow").is_file()
    (tmp_path / "out" / "completions" / "00001.done").unlink()
    (shards / ".train-cc-00001-00003.arrow.tmp").write_bytes(b"partial")
    assert tokenize(cfg)["shards"] == first["shards"]
    assert sorted(p.name for p in shards.iterdir()) == [
        "train-00001-00000-00000.arrow",
        "train-cc-00001-00000.arrow",
    ]


def test_flat_with_eos_appends_eos_after_every_document():
    tokens, lengths = flat_with_eos([[5, 6], [], [7]], 1, np.dtype(np.uint16))
    assert tokens.dtype == np.uint16 and tokens.tolist() == [5, 6, 1, 1, 7, 1]
    assert lengths.tolist() == [3, 1, 2]
    tokens, lengths = flat_with_eos([[70000]], 65536, np.dtype(np.uint32))
    assert tokens.tolist() == [70000, 65536] and tokens.dtype == np.uint32
    tokens, lengths = flat_with_eos([], 1, np.dtype(np.uint16))
    assert tokens.size == 0 and lengths.size == 0


def test_worker_counts_give_identical_shards_and_progress(tmp_path, docs_dir, tokenizer_file):
    seen = []
    one = tokenize(config(docs_dir, tokenizer_file, tmp_path / "one", shard_size_bytes=500))
    two = tokenize(
        config(docs_dir, tokenizer_file, tmp_path / "two", shard_size_bytes=500, workers=2), seen.append
    )
    assert one["shards"] == two["shards"] and len(one["shards"]) > 8
    assert sum(seen) == 180  # the pool reports progress per batch back to this process


def test_bad_source_is_an_error_naming_the_file(tmp_path, tokenizer_file, write_docs):
    path = write_docs(tmp_path / "docs" / "a.parquet", [{"id": "a", "text": "hi", "source": "common-crawl"}])
    with pytest.raises(ValueError, match=f"{path}: document 'a' has source 'common-crawl'"):
        tokenize(config(tmp_path, tokenizer_file, tmp_path / "out"))


def test_missing_tokenizer_is_an_error(tmp_path, docs_dir):
    with pytest.raises(FileNotFoundError, match=f"tokenizer not found: {tmp_path}"):
        tokenize(
            TokenizeConfig(input=[str(docs_dir)], tokenizer=str(tmp_path / "x.json"), output=str(tmp_path))
        )
