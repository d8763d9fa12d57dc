"""lmpipe's tokenize stage vs raw HF ``tokenizers``, in tokens per second.

Ours: ``data_prep.tokenizer.tokenize.tokenize`` over a prep output directory: parquet
reading, the train/val split hash, ``encode_batch_fast`` (batches of 1000), EOS
appending, Arrow shard writing, markers and manifest. Anchor: the same tokenizer.json
loaded into a bare ``tokenizers.Tokenizer`` and ``encode_batch_fast`` over the same
texts, already in memory, in batches of 1000. The encoder is the irreducible cost, so
the ratio says what everything around it costs. Both use the Rust thread pool on all
cores. The tokenizer (byte-level BPE, vocab 8192) is trained first with
``train_tokenizer`` on the same prep output (not timed).

Run: ``python bench/bench_tokenize.py [--quick]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from timing import median_seconds
from tokenizers import Tokenizer

from data_prep.config import PrepConfig
from data_prep.corpus import generate_corpus
from data_prep.prep import run_prep
from data_prep.tokenizer.config import TokenizeConfig, TokenizerTrainConfig
from data_prep.tokenizer.tokenize import tokenize
from data_prep.tokenizer.train import find_doc_files, train_tokenizer

BATCH = 1000
VOCAB = 8192


def anchor(tokenizer: Tokenizer, texts: list[str]) -> int:
    """Raw ``encode_batch_fast`` in batches; returns the token count."""
    n = 0
    for i in range(0, len(texts), BATCH):
        n += sum(len(e.ids) for e in tokenizer.encode_batch_fast(texts[i:i + BATCH], add_special_tokens=False))
    return n


def ours(docs_dir: Path, tokenizer_dir: Path, out: Path) -> int:
    """The whole tokenize stage into a fresh ``out``; returns the token count without the EOS per doc."""
    shutil.rmtree(out, ignore_errors=True)
    manifest = tokenize(TokenizeConfig(input=[str(docs_dir)], tokenizer=str(tokenizer_dir), output=str(out),
                                       batch_size=BATCH))
    return sum(s["tokens"] - s["docs"] for s in manifest["shards"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller corpus")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_tokenize_") as tmp:
        work = Path(tmp)
        corpus = generate_corpus(work / "corpus", seed=0, n_entities=500 if args.quick else 4000)
        docs_dir = work / "docs"
        run_prep(PrepConfig(input=[str(corpus.warc), str(corpus.wiki)], output=str(docs_dir)))
        tokenizer_file = train_tokenizer(TokenizerTrainConfig(input=str(docs_dir), output=str(work / "tok"),
                                                              vocab_size=VOCAB))
        texts = [t for path in find_doc_files(docs_dir) for t in pq.read_table(path, columns=["text"])["text"].to_pylist()
                 if t]
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        seconds, counts = median_seconds({"ours": lambda: ours(docs_dir, work / "tok", work / "shards"),
                                          "anchor": lambda: anchor(tokenizer, texts)})
    if counts["ours"] != counts["anchor"]:
        raise RuntimeError(f"token counts differ: ours {counts['ours']:,}, anchor {counts['anchor']:,}")
    n = counts["anchor"]
    ours_rate, anchor_rate = n / seconds["ours"], n / seconds["anchor"]
    print(f"\n{'tokenize (vocab ' + str(VOCAB) + ')':<22} {'docs':>7} {'tokens':>11} {'ours tok/s':>12} "
          f"{'anchor tok/s':>13} {'ratio':>7}")
    print(f"{'web + wiki docs':<22} {len(texts):>7,} {n:>11,} {ours_rate:>12,.0f} {anchor_rate:>13,.0f} "
          f"{ours_rate / anchor_rate:>6.2f}x")
    print(f"anchor: tokenizers.Tokenizer.encode_batch_fast, batch {BATCH}, texts in memory; "
          "median of 3 after a warm-up; no target set")


if __name__ == "__main__":
    main()
