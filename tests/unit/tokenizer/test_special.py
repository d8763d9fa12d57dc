"""External tokenizer.json files (GPT-2 and Llama style, built here with ``tokenizers``): the EOS
is found, appended to every row and recorded; a tokenizer without one is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from data_prep.tokenizer.config import TokenizeConfig
from data_prep.tokenizer.special import CANDIDATES, find_special_tokens
from data_prep.tokenizer.tokenize import tokenize

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "the mat was red"]


def gpt2_style(path: Path) -> Path:
    """Byte-level BPE whose only special token is <|endoftext|>, like GPT-2's."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        TEXTS,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer.save(str(path))
    return path


def llama_style(path: Path, special_tokens=("<unk>", "<s>", "</s>")) -> Path:
    """A WordPiece vocabulary with Llama's <unk>, <s>, </s> (ids 0, 1, 2)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        TEXTS,
        trainers.WordPieceTrainer(vocab_size=200, special_tokens=list(special_tokens), show_progress=False),
    )
    tokenizer.save(str(path))
    return path


def run(tmp_path: Path, tokenizer: Path, write_docs, **overrides) -> dict:
    docs = [{"id": f"d{i}", "text": text, "source": "cc"} for i, text in enumerate(TEXTS)]
    write_docs(tmp_path / "prep" / "docs" / "a.parquet", docs)
    return tokenize(
        TokenizeConfig(
            input=[str(tmp_path / "prep")],
            tokenizer=str(tokenizer),
            output=str(tmp_path / "out"),
            val_fraction=0.0,
            **overrides,
        )
    )


def rows(output: Path, manifest: dict) -> list[list[int]]:
    [shard] = manifest["shards"]
    with pa.memory_map(str(output / shard["path"])) as source:
        return pa.ipc.open_stream(source).read_all().column("input_ids").to_pylist()


def test_gpt2_style_tokenizer_appends_endoftext(tmp_path, write_docs):
    file = gpt2_style(tmp_path / "gpt2.json")
    manifest = run(tmp_path, file, write_docs)
    eos = Tokenizer.from_file(str(file)).token_to_id("<|endoftext|>")
    assert manifest["tokenizer"]["eos_token"] == "<|endoftext|>" and manifest["tokenizer"]["eos_id"] == eos
    assert manifest["tokenizer"]["bos_id"] is None and manifest["tokenizer"]["pad_id"] is None
    decoded = [Tokenizer.from_file(str(file)).decode(row[:-1]) for row in rows(tmp_path / "out", manifest)]
    assert all(row[-1] == eos for row in rows(tmp_path / "out", manifest)) and decoded == TEXTS


def test_llama_style_tokenizer_appends_s_close_and_records_bos(tmp_path, write_docs):
    manifest = run(tmp_path, llama_style(tmp_path / "tokenizer.json"), write_docs)
    assert {key: manifest["tokenizer"][key] for key in ("eos_token", "eos_id", "bos_token", "bos_id")} == {
        "eos_token": "</s>",
        "eos_id": 2,
        "bos_token": "<s>",
        "bos_id": 1,
    }
    assert [row.count(2) for row in rows(tmp_path / "out", manifest)] == [1, 1, 1]
    assert all(row[-1] == 2 for row in rows(tmp_path / "out", manifest))


def test_configured_name_wins_and_tokenizer_config_json_is_read(tmp_path, write_docs):
    file = llama_style(tmp_path / "tokenizer.json", ("<unk>", "<s>", "</s>", "<|eot|>"))
    assert run(tmp_path, file, write_docs, eos_token="<|eot|>")["tokenizer"]["eos_id"] == 3
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|eot|>"}}))
    manifest = run(tmp_path, file, write_docs)
    assert manifest["tokenizer"]["eos_token"] == "<|eot|>"
    assert (
        json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["eos_token"]["content"]
        == "<|eot|>"
    )


def test_no_eos_is_one_line_naming_the_file_and_the_candidates(tmp_path, write_docs):
    file = llama_style(tmp_path / "tokenizer.json", ("<unk>",))
    with pytest.raises(ValueError) as error:
        run(tmp_path, file, write_docs)
    message = str(error.value)
    assert "\n" not in message and f"{file}: " in message
    assert all(name in message for name in CANDIDATES["eos"]) and "eos_token=" in message
    with pytest.raises(ValueError, match=r"eos_token '</x>' is not in its vocabulary"):
        find_special_tokens(Tokenizer.from_file(str(file)), file, eos="</x>")


def test_a_file_that_is_not_a_tokenizer_is_one_line_naming_it(tmp_path, write_docs):
    (tmp_path / "tokenizer.json").write_text('{"model": "nope"}')
    with pytest.raises(
        ValueError, match=rf"^{tmp_path / 'tokenizer.json'}: not a tokenizers tokenizer.json \([^\n]*\)$"
    ):
        run(tmp_path, tmp_path / "tokenizer.json", write_docs)
