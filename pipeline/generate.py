"""``lmpipe generate``: complete prompts with a checkpoint's model, in one process, batch by batch.

Each batch of prompts is left-padded and sampled together with the model's KV cache
(``Transformer.generate``); a row's tokens are the ones it would get alone. A completion ends at
EOS, at ``max_new_tokens``, or just before the first stop string.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer

from pipeline.checkpoint import load_model_for_inference
from pipeline.job_config import GenerateJobConfig
from pipeline.model import Transformer
from pipeline.sft_data import ChatTokens, render


def generate(cfg: GenerateJobConfig) -> str:
    """The one prompt's text followed by its completion; with ``chat``, the reply alone."""
    (record,) = complete(cfg)
    return record["completion"] if cfg.chat else record["prompt"] + record["completion"]


def complete(cfg: GenerateJobConfig) -> list[dict[str, str]]:
    """``{"prompt", "completion"}`` for every prompt (``cfg.prompt``, or each of the ``cfg.prompts`` file's),
    in order; also written as JSONL to ``cfg.output`` when set."""
    prompts = [cfg.prompt] if cfg.prompt is not None else read_prompts(cfg.prompts)
    model, _, tokenizer = load_model_for_inference(cfg.checkpoint)
    special = ChatTokens.of(tokenizer, cfg.checkpoint)
    generator = torch.Generator().manual_seed(cfg.seed)
    records = []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start:start + cfg.batch_size]
        completions = complete_batch(model, tokenizer, special, batch, cfg, generator)
        records += [{"prompt": prompt, "completion": text} for prompt, text in zip(batch, completions)]
    if cfg.output:
        write_jsonl(records, Path(cfg.output))
    return records


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a .txt file (one per non-empty line) or a .jsonl file (each record's ``prompt``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    if path.suffix not in (".txt", ".jsonl"):
        raise ValueError(f"prompts file must be .txt (one per line) or .jsonl (a 'prompt' field): {path}")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            prompts.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"{path}:{number}: no string 'prompt' field")
        prompts.append(record["prompt"])
    if not prompts:
        raise ValueError(f"prompts file has no prompts: {path}")
    return prompts


def prompt_tokens(tokenizer: Tokenizer, special: ChatTokens, prompt: str, *, chat: bool) -> list[int]:
    """The context a prompt becomes: with ``chat``, a user turn as fine-tuning renders it, then the
    assistant marker; else its tokens, or EOS alone for an empty prompt (pretraining's document boundary)."""
    if chat:
        return [*render(tokenizer, special, [{"role": "user", "content": prompt}])[0], special.assistant]
    return tokenizer.encode(prompt, add_special_tokens=False).ids or [special.eos]


def complete_batch(model: Transformer, tokenizer: Tokenizer, special: ChatTokens, prompts: list[str],
                   cfg: GenerateJobConfig, generator: torch.Generator) -> list[str]:
    """The completion text of each prompt, sampled as one left-padded batch."""
    contexts = [prompt_tokens(tokenizer, special, prompt, chat=cfg.chat) for prompt in prompts]
    width = max(map(len, contexts))
    tokens = torch.tensor([[special.eos] * (width - len(c)) + c for c in contexts])
    valid = torch.tensor([[False] * (width - len(c)) + [True] * len(c) for c in contexts])

    def text_of(row: int, new_ids: list[int]) -> str:
        if special.eos in new_ids:
            new_ids = new_ids[:new_ids.index(special.eos)]
        if cfg.chat or contexts[row] == [special.eos]:
            return tokenizer.decode(new_ids)
        # Byte-level BPE: decoded with its prompt, a character split across the boundary stays whole.
        prompt_text = tokenizer.decode(contexts[row])
        whole = tokenizer.decode(contexts[row] + new_ids)
        return whole[len(prompt_text):] if whole.startswith(prompt_text) else tokenizer.decode(new_ids)

    def stopped(new: torch.Tensor) -> torch.Tensor:  # (B, n) -> (B,): rows whose text holds a stop string
        texts = [text_of(row, ids) for row, ids in enumerate(new.tolist())]
        return torch.tensor([any(stop in text for stop in cfg.stop) for text in texts])

    out = model.generate(tokens, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                         eos_id=special.eos, generator=generator, valid=valid, finished=stopped if cfg.stop else None)
    return [cut_at_stop(text_of(row, ids), cfg.stop) for row, ids in enumerate(out[:, width:].tolist())]


def cut_at_stop(text: str, stops: list[str]) -> str:
    """``text`` up to (not including) the earliest stop string in it."""
    return text[:min((i for i in (text.find(stop) for stop in stops) if i >= 0), default=len(text))]


def write_jsonl(records: list[dict[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
