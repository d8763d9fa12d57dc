import json

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from data_prep.tokenizer.config import SPECIAL_TOKENS, TokenizerTrainConfig
from data_prep.tokenizer.train import find_doc_files, iter_texts, train_tokenizer


def test_trained_tokenizer_files_and_special_ids(tokenizer_file):
    assert tokenizer_file.name == "tokenizer.json"
    assert (tokenizer_file.parent / "config.yaml").is_file()
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    assert tokenizer.get_vocab_size() == 400
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    saved = TokenizerTrainConfig.load(tokenizer_file.parent / "config.yaml")
    assert saved.vocab_size == 400


def test_loads_in_transformers_with_the_same_ids(tokenizer_file):
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    hf = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
    text = "The river  visited a quiet café\n東京 🙂 in 1887."
    ids = tokenizer.encode(text).ids
    assert hf(text)["input_ids"] == ids
    assert hf.decode(ids) == text == tokenizer.decode(ids)
    assert text.startswith("The") and tokenizer.id_to_token(ids[0]) != "ĠThe"  # no prefix space added


@pytest.mark.parametrize("load", [AutoTokenizer.from_pretrained, PreTrainedTokenizerFast.from_pretrained])
def test_transformers_loads_the_directory_with_its_special_tokens(tokenizer_file, load):
    hf = load(str(tokenizer_file.parent))
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 1, 2)
    assert hf.convert_tokens_to_ids(["<|user|>", "<|assistant|>"]) == [3, 4]
    assert sorted(hf.all_special_tokens) == sorted(SPECIAL_TOKENS)  # the chat markers are special too
    text = "The river  visited\n東京 🙂"
    assert hf.decode(hf(text)["input_ids"]) == text


def test_roles_are_configurable_and_checked(tmp_path, docs_dir):
    train_tokenizer(
        TokenizerTrainConfig(
            input=str(docs_dir),
            output=str(tmp_path),
            vocab_size=300,
            special_tokens=["<|endoftext|>", "<|user|>"],
            eos_token="<|endoftext|>",
            bos_token="",
            pad_token="",
        )
    )
    assert json.loads((tmp_path / "special_tokens_map.json").read_text()) == {
        "eos_token": "<|endoftext|>",
        "additional_special_tokens": ["<|user|>"],
    }
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf.eos_token_id == 0 and hf.bos_token is None
    with pytest.raises(ValueError, match="pad_token: '<pad>' is not one of special_tokens"):
        TokenizerTrainConfig.load(values={"input": "d", "output": "o", "pad_token": "<pad>"})


def test_iter_texts_stops_after_max_bytes(docs_dir):
    files = find_doc_files(docs_dir)
    everything = [t for batch in iter_texts(files, 10**12) for t in batch]
    sample = [t for batch in iter_texts(files, 1000) for t in batch]
    sizes = [len(t.encode()) for t in sample]
    assert sum(sizes[:-1]) < 1000 <= sum(sizes)  # up to and including the row that crosses the limit
    assert sample == everything[: len(sample)]
    assert len(everything) == 180


def test_missing_or_empty_docs_dir_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        train_tokenizer(TokenizerTrainConfig(input=str(tmp_path / "nope"), output=str(tmp_path / "tok")))
    (tmp_path / "empty" / "docs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "empty")):
        train_tokenizer(TokenizerTrainConfig(input=str(tmp_path / "empty"), output=str(tmp_path / "tok")))


def test_docs_without_text_are_an_error(tmp_path, write_docs):
    write_docs(tmp_path / "docs" / "a.parquet", [{"id": "x", "text": "", "source": "cc"}])
    with pytest.raises(ValueError, match="no text to train on in .*docs"):
        train_tokenizer(TokenizerTrainConfig(input=str(tmp_path), output=str(tmp_path / "tok")))


def test_config_requires_eos_token():
    with pytest.raises(ValueError, match="special_tokens"):
        TokenizerTrainConfig.load(values={"input": "d", "output": "o", "special_tokens": ["<|bos|>"]})


def test_training_is_deterministic(tmp_path, docs_dir, tokenizer_file):
    again = train_tokenizer(TokenizerTrainConfig(input=str(docs_dir), output=str(tmp_path), vocab_size=400))
    assert again.read_bytes() == tokenizer_file.read_bytes()
