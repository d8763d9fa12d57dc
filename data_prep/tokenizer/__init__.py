"""Tokenizer training and tokenization: docs/*.parquet -> tokenizer.json -> shards/*.arrow + manifest.json.

- ``train.train_tokenizer(TokenizerTrainConfig) -> Path``: byte-level BPE on a sample of a docs directory,
  with tokenizer_config.json + special_tokens_map.json so ``transformers`` knows bos/eos/pad.
- ``tokenize.tokenize(TokenizeConfig, progress=None) -> dict``: train/val shards per source, one task per
  docs file on the data-prep executors (local pool or Slurm array via ``task_main``); returns the manifest.
- ``special``: which token is EOS/BOS/PAD, for ours or an external (GPT-2, Llama) tokenizer.json.
- ``shards``: the shard file format and its writer; ``manifest``: build, write and ``load_manifest``.

The training side reads them through ``pipeline.data``. Nothing is re-exported here, so
importing a config does not pull in tokenizers or pyarrow.
"""
