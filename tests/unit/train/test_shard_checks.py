"""verify_shards: each kind of bad input is a one-line error that names the file, before training."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_prep.tokenizer.manifest import MANIFEST_FILE
from pipeline.testing import write_random_shards
from pipeline.train.data import verify_shards

VOCAB = 300


@pytest.fixture
def shards(tmp_path):
    write_random_shards(tmp_path, {"train": [50, 70, 30, 40], "val": [20, 25]}, vocab_size=VOCAB)
    return tmp_path


def edit_manifest(root, change) -> None:
    path = root / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def first_shard(root):
    return root / json.loads((root / MANIFEST_FILE).read_text())["shards"][0]["path"]


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_good_shards_pass(shards):
    assert verify_shards(shards, tokenizer_path=shards, vocab_size=VOCAB) == {
        "shards": 5,
        "docs": 6,
        "tokens": 235,
    }


def test_changed_shard_fails_its_sha256(shards):
    path = first_shard(shards)
    data = bytearray(path.read_bytes())
    data[-20] ^= 1  # a flipped bit inside the token buffer: the stream still parses
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 differs") as excinfo:
        verify_shards(shards)
    assert str(path) in one_line(excinfo)
    verify_shards(shards, check_sha=False)  # the flag skips it


def test_other_tokenizer_is_refused(shards, tmp_path_factory):
    other = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    other.write_text('{"another": true}\n')
    with pytest.raises(ValueError, match="differs from the one .* was made with") as excinfo:
        verify_shards(shards, tokenizer_path=other)
    assert str(other) in one_line(excinfo)


def test_truncated_arrow_file_is_named(shards):
    path = first_shard(shards)
    path.write_bytes(path.read_bytes()[:-60])
    with pytest.raises(ValueError, match="not a complete Arrow IPC stream") as excinfo:
        verify_shards(shards, check_sha=False)
    assert one_line(excinfo).startswith(str(path))


def test_manifest_pointing_to_a_missing_shard(shards):
    path = first_shard(shards)
    path.unlink()
    with pytest.raises(ValueError, match="is missing") as excinfo:
        verify_shards(shards)
    assert path.name in one_line(excinfo)


def test_dtype_too_small_for_the_vocabulary(shards):
    with pytest.raises(
        ValueError, match="dtype uint16 cannot hold the ids of a vocabulary of 70000"
    ) as excinfo:
        verify_shards(shards, vocab_size=70_000)
    assert MANIFEST_FILE in one_line(excinfo)


def test_schema_dtype_must_match_the_manifest(shards):
    edit_manifest(shards, lambda m: m.update(dtype="uint32"))
    with pytest.raises(ValueError, match="is list<item: uint16>, but .* says uint32") as excinfo:
        verify_shards(shards)
    assert str(first_shard(shards)) in one_line(excinfo)


def test_token_ids_beyond_the_model_vocabulary(shards):
    with pytest.raises(ValueError, match=r"token id \d+ is >= the vocabulary size 200") as excinfo:
        verify_shards(shards, vocab_size=200)
    assert ".arrow" in one_line(excinfo)


def test_counts_must_match_the_manifest(shards):
    edit_manifest(shards, lambda m: m["shards"][0].update(tokens=m["shards"][0]["tokens"] + 1))
    with pytest.raises(ValueError, match="holds 1 docs / 50 tokens, but .* says 1 / 51") as excinfo:
        verify_shards(shards)
    assert str(first_shard(shards)) in one_line(excinfo)


def test_uint32_shards_pass_with_a_large_vocabulary(tmp_path):
    streams = write_random_shards(tmp_path, {"train": [10, 10]}, vocab_size=70_000)
    assert streams[("train", "cc")][0].dtype == np.uint32
    assert verify_shards(tmp_path, vocab_size=70_000)["tokens"] == 20


def test_checking_and_mapping_shards_never_imports_pandas(shards):
    """Every training process verifies and maps its shards; pyarrow's ``to_numpy`` imported pandas for it,
    ~0.4 CPU-s a rank. Read through the buffers (``data_prep.arrays``), the data path imports none."""
    script = textwrap.dedent(
        f"""
        import sys
        from pipeline.train.data import verify_shards
        from pipeline.train.windows import TokenWindows
        verify_shards("{shards}", tokenizer_path="{shards}", vocab_size={VOCAB})
        assert len(TokenWindows("{shards}", "train", seq_len=8)) > 0
        print("pandas" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
