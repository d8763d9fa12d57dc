"""``lmpipe export hf``: a checkpoint as a Hugging Face ``LlamaForCausalLM`` directory.

It holds what ``transformers.AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` read, offline: ``config.json``, ``generation_config.json``,
``model.safetensors`` (or ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``
past ``max_shard_size``) and the tokenizer files. No ``transformers`` import (a dev dependency only):
the files are JSON and safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
import yaml
from tokenizers import Tokenizer

from data_prep.tokenizer.special import SpecialTokens, find_special_tokens
from pipeline.core.errors import ConfigError, MissingInputError
from pipeline.core.files import CONFIG_FILE, META_FILE, TOKENIZER_FILE, atomic_write_json
from pipeline.finetune.data import ASSISTANT, EOS, USER
from pipeline.hf.names import CONFIG, GENERATION_CONFIG, hf_names, llama_config
from pipeline.hf.tokenizer_files import write_tokenizer_files
from pipeline.hf.weights import DEFAULT_MAX_SHARD_SIZE, parse_size, write_sharded
from pipeline.model.args import ModelArgs
from pipeline.model.transformer import Transformer
from pipeline.train.checkpoint import load_consolidated, load_model_for_inference, resolve_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def export_hf(
    checkpoint: str | Path,
    output: str | Path,
    *,
    dtype: str = "float32",
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    tokenizer: str | Path | None = None,
) -> Path:
    """Write ``checkpoint`` (a step dir, a training output dir, or a ``checkpoint consolidate`` .safetensors)
    as a Hugging Face Llama directory ``output``; returns it. ``tokenizer``: a tokenizer.json (or its
    directory) instead of the checkpoint's own. ``output`` must not exist yet, or be empty; it appears
    complete or not at all (written beside it, then renamed)."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    shard_bytes = parse_size(max_shard_size)
    output = Path(output)
    _require_empty(output)
    model, args, source_dir = _load_for_export(Path(checkpoint))
    tokenizer_file = _tokenizer_file(tokenizer, source_dir, checkpoint)
    vocab = Tokenizer.from_file(str(tokenizer_file))
    special = as_exported(find_special_tokens(vocab, tokenizer_file))

    staging = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = model.state_dict()
    tensors = {
        theirs: state[ours].to(DTYPES[dtype]).contiguous()
        for ours, theirs in hf_names(args.n_layers, tie_embeddings=args.tie_embeddings).items()
    }
    write_sharded(tensors, staging, max_shard_bytes=shard_bytes)
    atomic_write_json(staging / CONFIG, llama_config(args, special, dtype=dtype))
    atomic_write_json(
        staging / GENERATION_CONFIG,
        {"bos_token_id": special.bos_id, "eos_token_id": special.eos_id, "pad_token_id": special.pad_id},
    )
    chat = _is_finetune(source_dir) and all(vocab.token_to_id(t) is not None for t in (USER, ASSISTANT, EOS))
    write_tokenizer_files(tokenizer_file, staging, special, model_max_length=args.seq_len, chat=chat)
    if output.exists():
        output.rmdir()  # empty, checked above
    staging.rename(output)
    return output


def as_exported(special: SpecialTokens) -> SpecialTokens:
    """The roles the export names: EOS also as BOS. Training puts EOS (never ``<|bos|>``) before every
    document, so EOS is what a document start looks like to the model; naming it BOS makes the
    harness's default prefix (``prefix_token_id``: BOS) and ``add_bos_token`` condition as lmpipe does."""
    return dataclasses.replace(special, bos=special.eos, bos_id=special.eos_id)


def _load_for_export(path: Path) -> tuple[Transformer, ModelArgs, Path | None]:
    """(model, args, the step dir it came from, if known) from a checkpoint or a consolidated file."""
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise MissingInputError(f"consolidated checkpoint not found: {path}")
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise MissingInputError(
                f"{sidecar} not found: a consolidated checkpoint needs the .json "
                "that `lmpipe checkpoint consolidate` writes beside it"
            )
        model = load_consolidated(path)
        source = Path(json.loads(sidecar.read_text()).get("checkpoint", ""))
        return model, model.args, source if (source / META_FILE).is_file() else None
    step_dir = resolve_checkpoint(path)
    model, args, _ = load_model_for_inference(step_dir)
    return model, args, step_dir


def _tokenizer_file(given: str | Path | None, source_dir: Path | None, checkpoint: str | Path) -> Path:
    if given is not None:
        path = Path(given)
        path = path / TOKENIZER_FILE if path.is_dir() else path
        if not path.is_file():
            raise MissingInputError(f"tokenizer not found: {path}")
        return path
    if source_dir is None or not (source_dir / TOKENIZER_FILE).is_file():
        raise MissingInputError(
            f"{checkpoint}: its tokenizer.json is not found (the checkpoint it was "
            "consolidated from is gone?); give one with --tokenizer"
        )
    return source_dir / TOKENIZER_FILE


def _is_finetune(step_dir: Path | None) -> bool:
    """Whether the job that wrote the checkpoint was a fine-tune (its config names ``init_from``)."""
    config = step_dir / CONFIG_FILE if step_dir is not None else None
    if config is None or not config.is_file():
        return False
    data = yaml.safe_load(config.read_text())
    return isinstance(data, dict) and bool(data.get("init_from"))


def _require_empty(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"{output} exists and is not an empty directory; choose a new --output")
