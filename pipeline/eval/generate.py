"""``lmpipe generate``: complete prompts with a checkpoint's model, in one process, batch by batch.

Each batch of prompts is left-padded and sampled together with the model's KV cache
(``Transformer.generate``); a row's tokens are the ones it would get alone. A completion ends at
EOS, at ``max_new_tokens``, or just before the first stop string.

In chat mode a prompt is a user turn, or a whole conversation so far from a prompts file (its
``messages``, read as fine-tuning reads them, ending in a user turn); either, after the optional
``system`` message, becomes the context fine-tuning renders for it followed by <|assistant|>
(``sft_data.render_prompt``), and the completion is the reply up to <|eos|>.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from pipeline.config.eval import GenerateJobConfig
from pipeline.core.errors import InputError, MissingInputError
from pipeline.finetune.data import ChatTokens, render_prompt
from pipeline.finetune.records import BadRecord, Message, conversation
from pipeline.model.generation import sampling_generator
from pipeline.model.transformer import Transformer
from pipeline.train.checkpoint import load_model_for_inference
from pipeline.train.cuda import inference_device

Prompt = str | list[Message]
"""Text to continue (or, in chat mode, a user turn), or a conversation ending in a user turn."""


def generate(cfg: GenerateJobConfig) -> str:
    """The one prompt's text followed by its completion; with ``chat``, the reply alone."""
    (record,) = complete(cfg)
    return record["completion"] if cfg.chat else record["prompt"] + record["completion"]


def complete(cfg: GenerateJobConfig) -> list[dict[str, Any]]:
    """``{"prompt", "completion"}`` for every prompt (``cfg.prompt``, or each of the ``cfg.prompts`` file's),
    in order, ``{"messages", "completion"}`` for a conversation, and ``"system"`` beside a prompt it
    preceded; also written as JSONL to ``cfg.output`` when set."""
    prompts: list[Prompt] = (
        [cfg.prompt] if cfg.prompt is not None else read_prompts(cfg.prompts, chat=cfg.chat)
    )
    device = inference_device()
    model, _, tokenizer = load_model_for_inference(cfg.checkpoint, device=device)
    special = ChatTokens.of(tokenizer, cfg.checkpoint)
    generator = sampling_generator(device, cfg.seed)
    records = []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start : start + cfg.batch_size]
        completions = complete_batch(model, tokenizer, special, batch, cfg, generator)
        records += [
            prompt_record(prompt, cfg) | {"completion": text} for prompt, text in zip(batch, completions)
        ]
    if cfg.output:
        write_jsonl(records, Path(cfg.output))
    return records


def prompt_record(prompt: Prompt, cfg: GenerateJobConfig) -> dict[str, Any]:
    """What a result says of its prompt: the text (and the system message before it), or the
    conversation exactly as the model saw it."""
    if isinstance(prompt, str):
        return {"prompt": prompt, "system": cfg.system} if cfg.system else {"prompt": prompt}
    return {"messages": chat_messages(prompt, cfg.system)}


def read_prompts(path: str | Path, *, chat: bool = False) -> list[Prompt]:
    """The prompts of a .txt file (one per non-empty line) or a .jsonl file (each record's ``prompt``,
    or with ``chat`` its conversation: any layout fine-tuning reads without ``data.columns``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"prompts file not found: {path}")
    if path.suffix not in (".txt", ".jsonl"):
        raise InputError(f"prompts file must be .txt (one per line) or .jsonl (a 'prompt' field): {path}")
    prompts: list[Prompt] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            prompts.append(line)
            continue
        try:
            prompts.append(_jsonl_prompt(json.loads(line), chat=chat))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
        except BadRecord as exc:
            raise InputError(f"{path}:{number}: {exc}") from None
    if not prompts:
        raise InputError(f"prompts file has no prompts: {path}")
    return prompts


def _jsonl_prompt(record: Any, *, chat: bool) -> Prompt:
    if isinstance(record, dict) and isinstance(record.get("prompt"), str):
        return record["prompt"]
    if not chat:
        raise BadRecord("no string 'prompt' field (a conversation needs --chat)")
    try:
        return conversation(record, last="user")
    except BadRecord as exc:
        raise BadRecord(f"no string 'prompt', and not a conversation ending in a user turn ({exc})") from None


def chat_messages(prompt: Prompt, system: str = "") -> list[Message]:
    """The conversation a chat prompt stands for: a text is one user turn; ``system`` goes first
    unless the conversation has a system message of its own."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if system and messages[0]["role"] != "system":
        return [{"role": "system", "content": system}, *messages]
    return messages


def prompt_tokens(
    tokenizer: Tokenizer, special: ChatTokens, prompt: Prompt, *, chat: bool, system: str = ""
) -> list[int]:
    """The context a prompt becomes: with ``chat``, its conversation as fine-tuning renders it, then the
    assistant marker; else its tokens, or EOS alone for an empty prompt (pretraining's document boundary)."""
    if chat:
        return render_prompt(tokenizer, special, chat_messages(prompt, system))
    assert isinstance(prompt, str), "a conversation is read only in chat mode"
    return tokenizer.encode(prompt, add_special_tokens=False).ids or [special.eos]


def complete_batch(
    model: Transformer,
    tokenizer: Tokenizer,
    special: ChatTokens,
    prompts: list[Prompt],
    cfg: GenerateJobConfig,
    generator: torch.Generator,
) -> list[str]:
    """The completion text of each prompt, sampled as one left-padded batch."""
    contexts = [
        prompt_tokens(tokenizer, special, prompt, chat=cfg.chat, system=cfg.system) for prompt in prompts
    ]
    width = max(map(len, contexts))
    tokens = torch.tensor([[special.eos] * (width - len(c)) + c for c in contexts])
    valid = torch.tensor([[False] * (width - len(c)) + [True] * len(c) for c in contexts])

    def text_of(row: int, new_ids: list[int]) -> str:
        if special.eos in new_ids:
            new_ids = new_ids[: new_ids.index(special.eos)]
        if cfg.chat or contexts[row] == [special.eos]:
            return tokenizer.decode(new_ids)
        # Byte-level BPE: decoded with its prompt, a character split across the boundary stays whole.
        prompt_text = tokenizer.decode(contexts[row])
        whole = tokenizer.decode(contexts[row] + new_ids)
        return whole[len(prompt_text) :] if whole.startswith(prompt_text) else tokenizer.decode(new_ids)

    def stopped(new: torch.Tensor) -> torch.Tensor:  # (B, n) -> (B,): rows whose text holds a stop string
        texts = [text_of(row, ids) for row, ids in enumerate(new.tolist())]
        return torch.tensor([any(stop in text for stop in cfg.stop) for text in texts])

    out = model.generate(
        tokens,
        cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        eos_id=special.eos,
        generator=generator,
        valid=valid,
        finished=stopped if cfg.stop else None,
    )
    return [cut_at_stop(text_of(row, ids), cfg.stop) for row, ids in enumerate(out[:, width:].tolist())]


def cut_at_stop(text: str, stops: list[str]) -> str:
    """``text`` up to (not including) the earliest stop string in it."""
    return text[: min((i for i in (text.find(stop) for stop in stops) if i >= 0), default=len(text))]


def write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
