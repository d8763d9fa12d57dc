"""``lmpipe import hf``: a Hugging Face Llama directory (config.json, safetensors weights, tokenizer.json)
as a weights-only checkpoint ``<out>/checkpoints/step_0/``, which ``finetune --init-from``, ``eval`` and
``generate`` accept."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
import yaml

from data_prep.tokenizer.special import HF_CONFIG_FILE
from pipeline.core.errors import ConfigError, InputError, MissingInputError
from pipeline.core.files import (
    CONFIG_FILE,
    LATEST_FILE,
    META_FILE,
    TOKENIZER_FILE,
    atomic_write_json,
    atomic_write_text,
)
from pipeline.hf.names import CONFIG, hf_names, model_args_from_config, read_json_object
from pipeline.hf.weights import read_hf_weights
from pipeline.model.args import ModelArgs
from pipeline.model.transformer import Transformer, empty_model
from pipeline.parallel.dcp import quiet_without_process_group
from pipeline.train.checkpoint import CHECKPOINTS_DIR, TIED_HEAD
from pipeline.train.step_files import DEFAULT_CHECKSUM_MAX_BYTES, write_checksums


def import_hf(hf_dir: str | Path, output: str | Path, *, seq_len: int | None = None) -> Path:
    """Read a Hugging Face Llama directory (config.json, safetensors weights, tokenizer.json) into a
    checkpoint ``<output>/checkpoints/step_0/`` (weights only, fp32); returns that step dir.
    ``seq_len``: the context to train and sample with (default: ``max_position_embeddings``)."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise MissingInputError(f"Hugging Face model directory not found: {hf_dir}")
    args = model_args_from_config(read_json_object(hf_dir / CONFIG), where=hf_dir / CONFIG, seq_len=seq_len)
    tokenizer_file = hf_dir / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise MissingInputError(
            f"{hf_dir}: no {TOKENIZER_FILE} (only fast tokenizers can be imported; "
            "save one with AutoTokenizer.from_pretrained(...).save_pretrained(dir))"
        )
    if (Path(output) / CHECKPOINTS_DIR).exists():
        raise ConfigError(f"{Path(output) / CHECKPOINTS_DIR} exists already; import into a new --output")
    model = _model_from_hf_weights(hf_dir, args)
    provenance = {"format": "hf", "path": str(hf_dir.resolve())}
    return save_weights_checkpoint(
        output,
        model,
        tokenizer_file=tokenizer_file,
        extra_files=(hf_dir / HF_CONFIG_FILE,),
        imported_from=provenance,
    )


def _model_from_hf_weights(hf_dir: Path, args: ModelArgs) -> Transformer:
    """Our model holding ``hf_dir``'s weights in fp32, once they are checked to be exactly a Llama's of
    ``args``."""
    names = hf_names(args.n_layers, tie_embeddings=args.tie_embeddings)
    theirs = read_hf_weights(hf_dir)
    missing = sorted(set(names.values()) - set(theirs))
    if missing:
        raise InputError(
            f"{hf_dir}: weights lack {len(missing)} tensor(s) of a LlamaForCausalLM "
            f"with this config.json, e.g. {', '.join(missing[:3])}"
        )
    unexpected = sorted(
        set(theirs)
        - set(names.values())
        - {"lm_head.weight"}
        - {n for n in theirs if n.endswith("rotary_emb.inv_freq")}
    )
    if unexpected:
        raise InputError(
            f"{hf_dir}: unexpected tensors for a LlamaForCausalLM (biases? another "
            f"architecture?): {', '.join(unexpected[:3])}"
        )
    model = empty_model(args, device="cpu")
    state = {ours: theirs[name].to(torch.float32) for ours, name in names.items()}
    if args.tie_embeddings:
        state[TIED_HEAD] = state["tok_embeddings.weight"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # shapes that disagree with config.json
        raise InputError(
            f"{hf_dir}: weights do not fit config.json: {str(exc).splitlines()[-1].strip()}"
        ) from None
    return model


def save_weights_checkpoint(
    output_dir: str | Path,
    model: Transformer,
    *,
    tokenizer_file: Path,
    imported_from: dict[str, Any],
    extra_files: tuple[Path, ...] = (),
    step: int = 0,
) -> Path:
    """A step directory holding only weights (DCP, as a one-process ``ddp`` save writes them), meta.json
    and the tokenizer, then ``latest``: what ``load_model_for_inference`` and ``finetune --init-from``
    read. No optimizer or loader state, so it cannot be resumed, only started from."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    final, staging = root / f"step_{step}", root / f"step_{step}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with quiet_without_process_group():
        dcp.save({"model": model.state_dict()}, checkpoint_id=str(staging), no_dist=True)
    meta = {
        "step": step,
        "tokens_seen": 0,
        "model": dataclasses.asdict(model.args),
        "strategy": "ddp",
        "world_size": 1,
        "loader": {},
        "mlflow_run_id": None,
        "progress": {},
        "rng": {},
        "imported_from": imported_from,
    }
    atomic_write_json(staging / META_FILE, meta)
    # Every step dir carries the config of the job that wrote it; an import's "job" is only where it
    # lives, which is what ``eval`` and ``generate`` look up (its MLflow store: <output>/mlflow.db).
    atomic_write_text(staging / CONFIG_FILE, yaml.safe_dump({"output_dir": str(Path(output_dir))}))
    shutil.copyfile(tokenizer_file, staging / TOKENIZER_FILE)
    for extra in extra_files:  # tokenizer_config.json: which tokens are bos/eos/pad (find_special_tokens)
        if extra.is_file():
            shutil.copyfile(extra, staging / extra.name)
    write_checksums(staging, hash_max_bytes=DEFAULT_CHECKSUM_MAX_BYTES)  # what resolve_checkpoint verifies
    staging.rename(final)
    atomic_write_text(root / LATEST_FILE, final.name + "\n")
    return final
