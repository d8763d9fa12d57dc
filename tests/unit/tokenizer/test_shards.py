import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset, List, Value

from data_prep.tokenizer.shards import ShardWriter, token_dtype
from pipeline.core.files import file_sha256


def read_rows(path) -> list[list[int]]:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().column("input_ids").to_pylist()


def docs(lengths, start=0):
    tokens = np.arange(start, start + sum(lengths), dtype=np.uint16)
    return tokens, np.array(lengths)


@pytest.mark.parametrize("vocab_size, dtype", [(400, np.uint16), (65536, np.uint16), (65537, np.uint32)])
def test_token_dtype(vocab_size, dtype):
    assert token_dtype(vocab_size) == dtype


def test_rolls_over_at_shard_size_keeping_rows_whole(tmp_path):
    (tmp_path / "shards").mkdir()
    # 10 tokens * 2 bytes + 4 offset bytes = 24 bytes a document; 50 bytes hold two.
    writer = ShardWriter(tmp_path, split="train", source="cc", task=3, dtype=np.uint16, shard_size_bytes=50)
    tokens, lengths = docs([10] * 5)
    writer.add(tokens[:30], lengths[:3])
    writer.add(tokens[30:], lengths[3:])
    entries = writer.close()
    assert [e["path"] for e in entries] == [f"shards/train-cc-00003-0000{n}.arrow" for n in range(3)]
    assert [e["docs"] for e in entries] == [2, 2, 1]
    assert [e["tokens"] for e in entries] == [20, 20, 10]
    rows = [row for e in entries for row in read_rows(tmp_path / e["path"])]
    assert rows == [list(range(i, i + 10)) for i in range(0, 50, 10)]
    assert all(e["sha256"] == file_sha256(tmp_path / e["path"]) for e in entries)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        e["path"][7:] for e in entries
    ]  # no temp files


def test_a_document_larger_than_a_shard_gets_its_own(tmp_path):
    (tmp_path / "shards").mkdir()
    writer = ShardWriter(tmp_path, split="val", source="wiki", task=0, dtype=np.uint16, shard_size_bytes=30)
    writer.add(*docs([3, 40, 3]))
    assert [e["tokens"] for e in writer.close()] == [3, 40, 3]


def test_datasets_loads_a_shard_unchanged(tmp_path):
    (tmp_path / "shards").mkdir()
    writer = ShardWriter(
        tmp_path, split="train", source="cc", task=0, dtype=np.uint16, shard_size_bytes=1 << 20
    )
    writer.add(*docs([4, 1, 7], start=65000))
    [entry] = writer.close()
    dataset = Dataset.from_file(str(tmp_path / entry["path"]))
    assert dataset.features["input_ids"] == List(Value("uint16"))
    assert dataset["input_ids"] == read_rows(tmp_path / entry["path"])
    assert dataset[1]["input_ids"] == [65004]


def test_uint32_shards(tmp_path):
    (tmp_path / "shards").mkdir()
    writer = ShardWriter(
        tmp_path, split="train", source="cc", task=0, dtype=np.uint32, shard_size_bytes=1 << 20
    )
    writer.add(np.array([70000, 1], dtype=np.uint32), np.array([2]))
    [entry] = writer.close()
    assert Dataset.from_file(str(tmp_path / entry["path"])).features["input_ids"] == List(Value("uint32"))
    assert read_rows(tmp_path / entry["path"]) == [[70000, 1]]
