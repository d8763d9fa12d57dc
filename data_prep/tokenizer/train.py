"""Train a byte-level BPE tokenizer on a sample of a docs directory.

The trainer reads text straight from ``docs/*.parquet`` in Arrow row batches, so only
one batch of strings is in Python at a time, and it stops after ``max_bytes`` of UTF-8.
Byte-level BPE has the 256 byte symbols in its alphabet, so every string encodes and
decodes back exactly; special tokens take the first ids (bos 0, eos 1, pad 2 by default).
Beside tokenizer.json go tokenizer_config.json and special_tokens_map.json, the files through
which ``transformers`` (``AutoTokenizer.from_pretrained(dir)``) learns which token is bos/eos/pad
and which are the chat markers; tokenizer.json alone does not say.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from data_prep.tokenizer.config import TokenizerTrainConfig
from data_prep.tokenizer.special import HF_CONFIG_FILE
from pipeline.core.errors import InputError, MissingInputError
from pipeline.core.files import CONFIG_FILE, atomic_write_json, atomic_write_text

TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
READ_BATCH_ROWS = 1024


def find_doc_files(docs_dir: str | Path) -> list[Path]:
    """The ``docs/*.parquet`` files of a data-prep output directory, sorted by name."""
    docs_dir = Path(docs_dir)
    if not docs_dir.is_dir():
        raise MissingInputError(f"docs directory not found: {docs_dir}")
    files = sorted((docs_dir / "docs").glob("*.parquet"))
    if not files:
        raise MissingInputError(f"no docs/*.parquet in {docs_dir} (is it a data prep output directory?)")
    return files


def iter_texts(files: list[Path], max_bytes: int) -> Iterator[list[str]]:
    """Batches of document texts, in file order, until ``max_bytes`` of UTF-8 have been yielded."""
    remaining = max_bytes
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH_ROWS, columns=["text"]):
            texts = batch.column(0)
            sizes = pc.cumulative_sum(pc.binary_length(texts).fill_null(0)).to_numpy()
            # Up to and including the row that crosses the limit, so the sample is never empty.
            keep = min(len(sizes), int(np.searchsorted(sizes, remaining)) + 1)
            if keep:
                yield [text for text in texts.slice(0, keep).to_pylist() if text]
                remaining -= int(sizes[keep - 1])
            if remaining <= 0:
                return


def new_byte_level_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(cfg: TokenizerTrainConfig) -> Path:
    """Train on ``cfg.input``; write tokenizer.json, the transformers side files and config.yaml
    to ``cfg.output``.

    Returns the path of tokenizer.json.
    """
    files = find_doc_files(cfg.input)
    sampled_docs = 0

    def counted(batches: Iterator[list[str]]) -> Iterator[list[str]]:
        nonlocal sampled_docs
        for batch in batches:
            sampled_docs += len(batch)
            yield batch

    tokenizer = new_byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(cfg.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(counted(iter_texts(files, cfg.max_bytes)), trainer=trainer)
    if sampled_docs == 0:
        raise InputError(f"no text to train on in {Path(cfg.input) / 'docs'} (every document is empty)")

    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / TOKENIZER_FILE
    atomic_write_text(path, tokenizer.to_str(pretty=True))
    write_transformers_files(output, cfg)
    cfg.save(output / CONFIG_FILE)
    return path


def write_transformers_files(output: Path, cfg: TokenizerTrainConfig) -> None:
    """tokenizer_config.json and special_tokens_map.json, as ``save_pretrained`` writes them
    (without importing transformers, which is not a runtime dependency)."""
    special = {**cfg.roles, "additional_special_tokens": cfg.chat_tokens}
    hf_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        **special,
    }
    for name, data in ((SPECIAL_TOKENS_MAP_FILE, special), (HF_CONFIG_FILE, hf_config)):
        atomic_write_json(output / name, data)
