"""Which tokens of a tokenizer end (and begin, and pad) a document.

Our trainer names them ``<|eos|>``, ``<|bos|>``, ``<|pad|>``; a GPT-2 tokenizer.json has only
``<|endoftext|>``, a Llama one ``<s>``/``</s>``. A name given in the config wins; otherwise
a ``tokenizer_config.json`` beside the tokenizer (what ``transformers`` saves, and what our
trainer writes) says; otherwise the first candidate the vocabulary has. Only EOS is
required, since tokenize appends it to every document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from pipeline.core.errors import ConfigError, InputError

HF_CONFIG_FILE = "tokenizer_config.json"
CANDIDATES = {
    "eos": ("<|eos|>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"),
    "bos": ("<|bos|>", "<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"),
    "pad": ("<|pad|>", "<pad>", "[PAD]"),
}


@dataclass(frozen=True)
class SpecialTokens:
    eos: str
    eos_id: int
    bos: str | None = None
    bos_id: int | None = None
    pad: str | None = None
    pad_id: int | None = None

    def manifest_entry(self) -> dict:
        """The ids (read by the training side) and the names (for people) of the manifest's tokenizer."""
        return {
            "eos_id": self.eos_id,
            "bos_id": self.bos_id,
            "pad_id": self.pad_id,
            "eos_token": self.eos,
            "bos_token": self.bos,
            "pad_token": self.pad,
        }


def find_special_tokens(
    tokenizer: Tokenizer, path: str | Path, *, eos: str = "", bos: str = ""
) -> SpecialTokens:
    """Resolve the roles for the tokenizer loaded from ``path`` (a tokenizer.json);
    ``eos``/``bos`` are names from the config ("" = detect). Errors are one line naming ``path``."""
    path = Path(path)
    declared = _declared_roles(path.with_name(HF_CONFIG_FILE))
    found = {
        role: _find(tokenizer, path, role, given, declared.get(role))
        for role, given in (("eos", eos), ("bos", bos), ("pad", ""))
    }
    if found["eos"] is None:
        raise InputError(
            f"{path}: no end-of-document token: none of {', '.join(CANDIDATES['eos'])} is in its "
            "vocabulary; name it with eos_token=..."
        )
    ids = {role: None if name is None else tokenizer.token_to_id(name) for role, name in found.items()}
    eos_id = ids["eos"]
    assert eos_id is not None  # _find only returns a token that is in the vocabulary
    return SpecialTokens(
        eos=found["eos"],
        eos_id=eos_id,
        bos=found["bos"],
        bos_id=ids["bos"],
        pad=found["pad"],
        pad_id=ids["pad"],
    )


def _find(tokenizer: Tokenizer, path: Path, role: str, given: str, declared: str | None) -> str | None:
    if given:
        if tokenizer.token_to_id(given) is None:
            raise ConfigError(f"{path}: {role}_token {given!r} is not in its vocabulary")
        return given
    names = ([declared] if declared else []) + list(CANDIDATES[role])
    return next((name for name in names if tokenizer.token_to_id(name) is not None), None)


def _declared_roles(hf_config: Path) -> dict[str, str]:
    """``{"eos": name, ...}`` from a tokenizer_config.json, whose values are strings or
    ``{"content": name, ...}`` (older transformers); {} when there is none."""
    try:
        data = json.loads(hf_config.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    roles = {}
    for role in CANDIDATES:
        value = data.get(f"{role}_token") if isinstance(data, dict) else None
        name = value.get("content") if isinstance(value, dict) else value
        if isinstance(name, str) and name:
            roles[role] = name
    return roles
