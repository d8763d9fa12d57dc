"""Hugging Face interop: our checkpoints <-> ``LlamaForCausalLM`` directories.

``export_hf`` writes what ``transformers.AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` read, offline: ``config.json``, ``generation_config.json``,
``model.safetensors`` (or ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``
past ``max_shard_size``) and the tokenizer files. ``import_hf`` reads such a directory back into
``<out>/checkpoints/step_0/``, which ``finetune --init-from``, ``eval`` and ``generate`` accept.
Neither imports ``transformers`` (a dev dependency only): the files are JSON and safetensors.

The model is Llama's, so the weights map one to one by name (``HF_NAMES``), with no transpose
and no permutation: both sides store ``nn.Linear`` weights as (out, in), and both rotate queries
and keys the rotate-half way (frequency i turns dims i and i + head_dim/2; ``model.rope_tables``
and ``apply_rope`` against ``transformers``' ``rotate_half``). Checkpoints converted from Meta's
interleaved layout were permuted once, on their way into ``transformers``; nothing is to undo
here. A tied head has no tensor of its own on either side (``tie_word_embeddings``).

Our chat format (``sft_data``: ``<|user|> prompt <|assistant|> response <|eos|>``, multi-turn, a
system message as fine-tuning renders it) goes out as the tokenizer's ``chat_template`` when the
checkpoint is a fine-tune, so ``apply_chat_template`` gives the ids fine-tuning trained on and, with
``add_generation_prompt=True``, the ids ``lmpipe generate --chat`` feeds the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from tokenizers import Tokenizer

from data_prep.tokenizer.special import HF_CONFIG_FILE, SpecialTokens, find_special_tokens
from pipeline.finetune.data import ASSISTANT, EOS, SYSTEM, USER
from pipeline.model.args import ModelArgs
from pipeline.model.transformer import Transformer, empty_model
from pipeline.train.checkpoint import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    LATEST_FILE,
    META_FILE,
    TIED_HEAD,
    TOKENIZER_FILE,
    _write_atomically,
    load_consolidated,
    load_model_for_inference,
    resolve_checkpoint,
)

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_MAX_SHARD_SIZE = "5GB"
ROPE_THETA_DEFAULT = 10000.0  # LlamaConfig's default when a config names none

CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    f"{{%- if system_token -%}}{{{{ '{SYSTEM}' + system }}}}{{%- endif -%}}"
    "{%- else -%}{%- set system = none -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] != ['user', 'assistant'][loop.index0 % 2] -%}"
    "{{ raise_exception('an optional system message first, then user and assistant turns alternating, "
    "as the model was fine-tuned') }}{%- endif -%}"
    "{%- if message['role'] == 'user' and loop.first and system is not none and not system_token -%}"
    f"{{{{ '{USER}' + system + '\\n\\n' + message['content'] }}}}"
    f"{{%- elif message['role'] == 'user' -%}}{{{{ '{USER}' + message['content'] }}}}"
    f"{{%- else -%}}{{{{ '{ASSISTANT}' + message['content'] + '{EOS}' }}}}{{%- endif -%}}"
    "{%- endfor -%}"
    f"{{%- if add_generation_prompt -%}}{{{{ '{ASSISTANT}' }}}}{{%- endif -%}}"
)
"""``sft_data.render``'s layout, no spaces added: ``<|system|>`` S when the tokenizer has that token
(``system_token``, set by ``chat_template``), else S + "\\n\\n" opening the first user turn; then per
turn ``<|user|>`` U, ``<|assistant|>`` A ``<|eos|>``; ``add_generation_prompt`` appends ``<|assistant|>``."""


def chat_template(*, system_token: bool) -> str:
    """``CHAT_TEMPLATE`` for a tokenizer with (or without) ``<|system|>``: fixed when the files are
    written, since a template cannot look into the vocabulary."""
    return f"{{%- set system_token = {str(system_token).lower()} -%}}{CHAT_TEMPLATE}"


def hf_names(n_layers: int, *, tie_embeddings: bool) -> dict[str, str]:
    """Our parameter name -> the ``LlamaForCausalLM`` one, for every tensor written (a tied head is not)."""
    names = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    per_layer = {
        "attention_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attention.wq": "self_attn.q_proj",
        "attention.wk": "self_attn.k_proj",
        "attention.wv": "self_attn.v_proj",
        "attention.wo": "self_attn.o_proj",
        "feed_forward.w1": "mlp.gate_proj",
        "feed_forward.w3": "mlp.up_proj",
        "feed_forward.w2": "mlp.down_proj",
    }
    for i in range(n_layers):
        names.update(
            {
                f"layers.{i}.{ours}.weight": f"model.layers.{i}.{theirs}.weight"
                for ours, theirs in per_layer.items()
            }
        )
    if not tie_embeddings:
        names[TIED_HEAD] = "lm_head.weight"
    return names


# ---------------------------------------------------------------------------------------------- export


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
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    shard_bytes = parse_size(max_shard_size)
    output = Path(output)
    _require_empty(output)
    model, args, source_dir = _load_for_export(Path(checkpoint))
    tokenizer_file = _tokenizer_file(tokenizer, source_dir, checkpoint)
    vocab = Tokenizer.from_file(str(tokenizer_file))
    special = find_special_tokens(vocab, tokenizer_file)

    staging = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = model.state_dict()
    tensors = {
        theirs: state[ours].to(DTYPES[dtype]).contiguous()
        for ours, theirs in hf_names(args.n_layers, tie_embeddings=args.tie_embeddings).items()
    }
    write_sharded(tensors, staging, max_shard_bytes=shard_bytes)
    _write_json(staging / CONFIG, llama_config(args, special, dtype=dtype))
    _write_json(
        staging / GENERATION_CONFIG,
        {"bos_token_id": special.bos_id, "eos_token_id": special.eos_id, "pad_token_id": special.pad_id},
    )
    chat = _is_finetune(source_dir) and all(vocab.token_to_id(t) is not None for t in (USER, ASSISTANT, EOS))
    write_tokenizer_files(tokenizer_file, staging, special, model_max_length=args.seq_len, chat=chat)
    if output.exists():
        output.rmdir()  # empty, checked above
    staging.rename(output)
    return output


def llama_config(args: ModelArgs, special: SpecialTokens, *, dtype: str) -> dict[str, Any]:
    """``config.json`` of the ``LlamaForCausalLM`` that computes what our model does.

    RoPE's base goes both as ``rope_parameters`` (transformers 5) and as ``rope_theta`` (4.x);
    the weights' dtype as ``dtype`` (``torch_dtype`` before 4.56, deprecated since)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": args.vocab_size,
        "hidden_size": args.d_model,
        "intermediate_size": args.ffn_hidden,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_kv_heads,
        "head_dim": args.head_dim,
        "max_position_embeddings": args.seq_len,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": args.rope_theta},
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "tie_word_embeddings": args.tie_embeddings,
        "bos_token_id": special.bos_id,
        "eos_token_id": special.eos_id,
        "pad_token_id": special.pad_id,
        "dtype": dtype,
    }


def write_sharded(tensors: dict[str, torch.Tensor], directory: Path, *, max_shard_bytes: int) -> list[Path]:
    """``model.safetensors``, or as many files of at most ``max_shard_bytes`` as it takes (a larger tensor
    gets one to itself) and the index that ``from_pretrained`` follows; returns the files written."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(directory / WEIGHTS), metadata={"format": "pt"})
        return [directory / WEIGHTS]
    files = [directory / f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for shard, path in zip(shards, files):
        save_file(shard, str(path), metadata={"format": "pt"})
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
        "weight_map": {name: path.name for shard, path in zip(shards, files) for name in shard},
    }
    _write_json(directory / WEIGHTS_INDEX, index)
    return files


def write_tokenizer_files(
    tokenizer_file: Path, directory: Path, special: SpecialTokens, *, model_max_length: int, chat: bool
) -> None:
    """tokenizer.json as it is, and the side files that tell ``AutoTokenizer`` its class and roles
    (as ``data_prep.tokenizer.train.write_transformers_files`` does), plus the chat template if ``chat``."""
    shutil.copyfile(tokenizer_file, directory / TOKENIZER_FILE)
    roles = {
        f"{role}_token": name
        for role, name in (("bos", special.bos), ("eos", special.eos), ("pad", special.pad))
        if name is not None
    }
    added = json.loads(tokenizer_file.read_text()).get("added_tokens", [])
    extra = [t["content"] for t in added if t.get("special") and t["content"] not in roles.values()]
    special_map = {**roles, "additional_special_tokens": extra}
    hf_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        **special_map,
    }
    if chat:
        vocab = Tokenizer.from_file(str(tokenizer_file))
        hf_config["chat_template"] = chat_template(system_token=vocab.token_to_id(SYSTEM) is not None)
    _write_json(directory / SPECIAL_TOKENS_MAP, special_map)
    _write_json(directory / HF_CONFIG_FILE, hf_config)


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as ``5GB``, ``500MB``, ``2GiB`` (decimal and binary units, as HF)."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, flags=re.IGNORECASE)
        if not match:
            raise ValueError(f"max shard size {size!r} is not a size such as 5GB, 500MB or 1000000")
        unit = (match.group(2) or "B").upper()
        scale = (1024 if "I" in unit else 1000) ** "BKMGT".index(unit[0])
        value = int(float(match.group(1)) * scale)
    if value <= 0:
        raise ValueError(f"max shard size must be positive, not {size!r}")
    return value


def _load_for_export(path: Path) -> tuple[Transformer, ModelArgs, Path | None]:
    """(model, args, the step dir it came from, if known) from a checkpoint or a consolidated file."""
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"consolidated checkpoint not found: {path}")
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise FileNotFoundError(
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
            raise FileNotFoundError(f"tokenizer not found: {path}")
        return path
    if source_dir is None or not (source_dir / TOKENIZER_FILE).is_file():
        raise FileNotFoundError(
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


# ---------------------------------------------------------------------------------------------- import


def import_hf(hf_dir: str | Path, output: str | Path, *, seq_len: int | None = None) -> Path:
    """Read a Hugging Face Llama directory (config.json, safetensors weights, tokenizer.json) into a
    checkpoint ``<output>/checkpoints/step_0/`` (weights only, fp32); returns that step dir.
    ``seq_len``: the context to train and sample with (default: ``max_position_embeddings``)."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"Hugging Face model directory not found: {hf_dir}")
    args = model_args_from_config(_read_json(hf_dir / CONFIG), where=hf_dir / CONFIG, seq_len=seq_len)
    tokenizer_file = hf_dir / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise FileNotFoundError(
            f"{hf_dir}: no {TOKENIZER_FILE} (only fast tokenizers can be imported; "
            "save one with AutoTokenizer.from_pretrained(...).save_pretrained(dir))"
        )
    if (Path(output) / CHECKPOINTS_DIR).exists():
        raise ValueError(f"{Path(output) / CHECKPOINTS_DIR} exists already; import into a new --output")
    names = hf_names(args.n_layers, tie_embeddings=args.tie_embeddings)
    theirs = read_hf_weights(hf_dir)
    missing = sorted(set(names.values()) - set(theirs))
    if missing:
        raise ValueError(
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
        raise ValueError(
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
        raise ValueError(
            f"{hf_dir}: weights do not fit config.json: {str(exc).splitlines()[-1].strip()}"
        ) from None
    provenance = {"format": "hf", "path": str(hf_dir.resolve())}
    return save_weights_checkpoint(
        output,
        model,
        tokenizer_file=tokenizer_file,
        extra_files=(hf_dir / HF_CONFIG_FILE,),
        imported_from=provenance,
    )


def model_args_from_config(config: dict[str, Any], *, where: Path, seq_len: int | None = None) -> ModelArgs:
    """Our ``ModelArgs`` for a Llama ``config.json``; one line naming every unsupported setting otherwise."""
    problems = []
    if config.get("model_type") != "llama":
        problems.append(f"model_type {config.get('model_type')!r} (only 'llama')")
    architectures = config.get("architectures") or ["LlamaForCausalLM"]
    if architectures != ["LlamaForCausalLM"]:
        problems.append(f"architectures {architectures} (only LlamaForCausalLM)")
    if config.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {config['hidden_act']!r} (only silu)")
    for bias in ("attention_bias", "mlp_bias"):
        if config.get(bias):
            problems.append(f"{bias} true (no biases)")
    rope = config.get("rope_parameters") or {}
    if config.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        problems.append(f"rope scaling {config.get('rope_scaling') or rope} (only plain RoPE)")
    if config.get("partial_rotary_factor", 1.0) != 1.0:
        problems.append("partial_rotary_factor (only full RoPE)")
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    absent = [key for key in required if not isinstance(config.get(key), int)]
    if absent:
        problems.append(f"no integer {', '.join(absent)}")
    if problems:
        raise ValueError(f"{where}: unsupported model: {'; '.join(problems)}")
    d_model, n_heads = config["hidden_size"], config["num_attention_heads"]
    n_kv_heads = config.get("num_key_value_heads") or n_heads
    head_dim = config.get("head_dim") or d_model // n_heads
    if d_model % n_heads or head_dim != d_model // n_heads or n_heads % n_kv_heads:
        raise ValueError(
            f"{where}: unsupported model: head_dim {head_dim} with hidden_size {d_model}, "
            f"{n_heads} heads and {n_kv_heads} key/value heads (needs head_dim = "
            "hidden_size / heads, and heads a multiple of key/value heads)"
        )
    # Absent keys take LlamaConfig's defaults.
    return ModelArgs(
        vocab_size=config["vocab_size"],
        d_model=d_model,
        n_layers=config["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        seq_len=seq_len or config.get("max_position_embeddings", 2048),
        ffn_hidden=config["intermediate_size"],
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        rope_theta=float(rope.get("rope_theta", config.get("rope_theta", ROPE_THETA_DEFAULT))),
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
    )


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors``, or of the shards its index lists, by HF name."""
    from safetensors.torch import load_file

    if (hf_dir / WEIGHTS).is_file():
        return load_file(str(hf_dir / WEIGHTS))
    if not (hf_dir / WEIGHTS_INDEX).is_file():
        raise FileNotFoundError(
            f"{hf_dir}: no {WEIGHTS} or {WEIGHTS_INDEX} (only safetensors weights are read, "
            "not pytorch_model.bin)"
        )
    weight_map = _read_json(hf_dir / WEIGHTS_INDEX).get("weight_map", {})
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not (hf_dir / shard).is_file():
            raise FileNotFoundError(f"{hf_dir}: shard {shard}, listed in {WEIGHTS_INDEX}, is missing")
        tensors.update(load_file(str(hf_dir / shard)))
    return tensors


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
    import torch.distributed.checkpoint as dcp

    from pipeline.parallel.base import quiet_without_process_group

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
    _write_json(staging / META_FILE, meta)
    shutil.copyfile(tokenizer_file, staging / TOKENIZER_FILE)
    for extra in extra_files:  # tokenizer_config.json: which tokens are bos/eos/pad (find_special_tokens)
        if extra.is_file():
            shutil.copyfile(extra, staging / extra.name)
    staging.rename(final)
    _write_atomically(root / LATEST_FILE, final.name + "\n")
    return final


# ---------------------------------------------------------------------------------------------- helpers


def _require_empty(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"{output} exists and is not an empty directory; choose a new --output")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
