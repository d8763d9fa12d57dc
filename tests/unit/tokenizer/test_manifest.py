import json

import pytest

from data_prep.tokenizer.manifest import build_manifest, load_manifest, write_manifest

TOKENIZER = {
    "path": "tokenizer.json",
    "sha256": "0" * 64,
    "vocab_size": 400,
    "eos_id": 1,
    "bos_id": 0,
    "pad_id": 2,
}


def shard(path, split, source, docs, tokens):
    return {
        "path": path,
        "split": split,
        "source": source,
        "docs": docs,
        "tokens": tokens,
        "sha256": "f" * 64,
    }


@pytest.fixture
def written(tmp_path):
    shards = [
        shard("shards/val-cc-00000-00000.arrow", "val", "cc", 1, 5),
        shard("shards/train-wiki-00000-00000.arrow", "train", "wiki", 2, 7),
        shard("shards/train-cc-00000-00000.arrow", "train", "cc", 3, 11),
    ]
    (tmp_path / "shards").mkdir()
    for s in shards:
        (tmp_path / s["path"]).write_bytes(b"")
    manifest = build_manifest(
        tokenizer=TOKENIZER, dtype="uint16", shards=shards, config={"a": 1}, command="lmpipe x"
    )
    write_manifest(tmp_path, manifest)
    return tmp_path


def test_totals_and_order(written):
    manifest = load_manifest(written)
    assert [s["path"] for s in manifest["shards"]] == sorted(s["path"] for s in manifest["shards"])
    assert manifest["totals"] == {
        "docs": 6,
        "tokens": 23,
        "by_split": {"train": {"docs": 5, "tokens": 18}, "val": {"docs": 1, "tokens": 5}},
        "by_source": {"cc": {"docs": 4, "tokens": 16}, "wiki": {"docs": 2, "tokens": 7}},
    }
    assert manifest["format_version"] == 1 and manifest["mixture"] is None
    assert manifest["command"] == "lmpipe x" and manifest["config"] == {"a": 1}


def test_missing_manifest_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no manifest.json in {tmp_path}"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("shards"), "missing key 'shards'"),
        (lambda m: m.update(format_version=2), "format_version is 2"),
        (lambda m: m.update(dtype="int8"), "dtype is 'int8'"),
        (lambda m: m["tokenizer"].pop("eos_id"), "tokenizer lacks eos_id"),
        (lambda m: m["shards"][1].pop("tokens"), r"shards\[1\] lacks tokens"),
        (
            lambda m: m["shards"][0].update(path="shards/gone.arrow"),
            r"shards\[0\]: file shards/gone.arrow is missing",
        ),
    ],
)
def test_invalid_manifest_names_the_file(written, edit, message):
    path = written / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=f"{path}: {message}"):
        load_manifest(written)


def test_broken_json_names_the_file(written):
    (written / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match=f"{written / 'manifest.json'}: not valid JSON"):
        load_manifest(written)
