"""The tokenizer side of a Hugging Face directory: tokenizer.json, the files that tell ``AutoTokenizer``
its class and special tokens, and for a fine-tune our chat format as a ``chat_template``.

Our chat format (``finetune.data``: ``<|user|> prompt <|assistant|> response <|eos|>``, multi-turn, a
system message as fine-tuning renders it) goes out as the template, so ``apply_chat_template`` gives
the ids fine-tuning trained on and, with ``add_generation_prompt=True``, the ids
``lmpipe generate --chat`` feeds the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import Tokenizer

from data_prep.tokenizer.special import HF_CONFIG_FILE, SpecialTokens
from pipeline.core.files import TOKENIZER_FILE, atomic_write_json
from pipeline.finetune.data import ASSISTANT, EOS, SYSTEM, USER
from pipeline.hf.names import SPECIAL_TOKENS_MAP

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
"""``finetune.data.render``'s layout, no spaces added: ``<|system|>`` S when the tokenizer has that token
(``system_token``, set by ``chat_template``), else S + "\\n\\n" opening the first user turn; then per
turn ``<|user|>`` U, ``<|assistant|>`` A ``<|eos|>``; ``add_generation_prompt`` appends ``<|assistant|>``."""


def chat_template(*, system_token: bool) -> str:
    """``CHAT_TEMPLATE`` for a tokenizer with (or without) ``<|system|>``: fixed when the files are
    written, since a template cannot look into the vocabulary."""
    return f"{{%- set system_token = {str(system_token).lower()} -%}}{CHAT_TEMPLATE}"


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
    atomic_write_json(directory / SPECIAL_TOKENS_MAP, special_map)
    atomic_write_json(directory / HF_CONFIG_FILE, hf_config)
