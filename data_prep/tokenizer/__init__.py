"""Tokenizer training and tokenization: docs/*.parquet -> tokenizer.json -> shards/*.arrow + manifest.json.

- ``train.train_tokenizer(TokenizerTrainConfig) -> Path``: byte-level BPE on a sample of a docs directory.
- ``tokenize.tokenize(TokenizeConfig, progress=None) -> dict``: train/val shards per source, returns the manifest.
- ``shards``: the shard file format and its writer; ``manifest``: build, write and ``load_manifest``.

The training side reads them through ``pipeline.data``. Nothing is re-exported here, so
importing a config does not pull in tokenizers or pyarrow.
"""
