"""What our model is called on the Hugging Face side: weight names, ``config.json`` both ways, file names.

The model is Llama's, so the weights map one to one by name (``hf_names``), with no transpose and no
permutation: both sides store ``nn.Linear`` weights as (out, in), and both rotate queries and keys the
rotate-half way (frequency i turns dims i and i + head_dim/2; ``transformer.rope_tables`` and
``apply_rope`` against ``transformers``' ``rotate_half``). Checkpoints converted from Meta's interleaved
layout were permuted once, on their way into ``transformers``; nothing is to undo here. A tied head has
no tensor of its own on either side (``tie_word_embeddings``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_prep.tokenizer.special import SpecialTokens
from pipeline.core.errors import ConfigError, InputError, MissingInputError
from pipeline.model.args import ModelArgs
from pipeline.train.checkpoint import TIED_HEAD

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
ROPE_THETA_DEFAULT = 10000.0  # LlamaConfig's default when a config names none

_PER_LAYER = {
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
"""Our module path within a block -> the ``LlamaDecoderLayer`` one."""


def hf_names(n_layers: int, *, tie_embeddings: bool) -> dict[str, str]:
    """Our parameter name -> the ``LlamaForCausalLM`` one, for every tensor written (a tied head is not)."""
    names = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    for i in range(n_layers):
        names.update(
            {
                f"layers.{i}.{ours}.weight": f"model.layers.{i}.{theirs}.weight"
                for ours, theirs in _PER_LAYER.items()
            }
        )
    if not tie_embeddings:
        names[TIED_HEAD] = "lm_head.weight"
    return names


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


def model_args_from_config(config: dict[str, Any], *, where: Path, seq_len: int | None = None) -> ModelArgs:
    """Our ``ModelArgs`` for a Llama ``config.json``; one line naming every unsupported setting otherwise.
    Its ``intermediate_size`` is kept as it is, whether or not it follows the ladder's 8/3 rule."""
    problems = unsupported_settings(config)
    if problems:
        raise ConfigError(f"{where}: unsupported model: {'; '.join(problems)}")
    d_model, n_heads = config["hidden_size"], config["num_attention_heads"]
    n_kv_heads = config.get("num_key_value_heads") or n_heads
    head_dim = config.get("head_dim") or d_model // n_heads
    if d_model % n_heads or head_dim != d_model // n_heads or n_heads % n_kv_heads:
        raise ConfigError(
            f"{where}: unsupported model: head_dim {head_dim} with hidden_size {d_model}, "
            f"{n_heads} heads and {n_kv_heads} key/value heads (needs head_dim = "
            "hidden_size / heads, and heads a multiple of key/value heads)"
        )
    rope = config.get("rope_parameters") or {}
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


def unsupported_settings(config: dict[str, Any]) -> list[str]:
    """What of a ``config.json`` our model cannot compute: another architecture, activation, biases,
    scaled or partial RoPE, or missing sizes."""
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
    return problems


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (``config.json``, the weights' index)."""
    if not path.is_file():
        raise MissingInputError(f"{path} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data
