"""``lmpipe generate``: continue a prompt with a checkpoint's model, in one process."""

from __future__ import annotations

import torch

from pipeline.checkpoint import load_model_for_inference
from pipeline.job_config import GenerateJobConfig
from pipeline.sft_data import ChatTokens


def generate(cfg: GenerateJobConfig) -> str:
    """The prompt followed by up to ``max_new_tokens`` sampled tokens (stopping at EOS), as text.

    An empty prompt starts from EOS, the document boundary the model saw in pretraining.
    With ``chat``, the prompt is a user turn as in fine-tuning and only the reply comes back.
    """
    model, _, tokenizer = load_model_for_inference(cfg.checkpoint)
    special = ChatTokens.of(tokenizer, cfg.checkpoint)
    prompt_ids = tokenizer.encode(cfg.prompt, add_special_tokens=False).ids if cfg.prompt else []
    context = [special.user, *prompt_ids, special.assistant] if cfg.chat else prompt_ids or [special.eos]
    generator = torch.Generator().manual_seed(cfg.seed)
    out = model.generate(torch.tensor([context]), cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                         eos_id=special.eos, generator=generator)
    new_ids = [token for token in out[0, len(context):].tolist() if token != special.eos]
    # Byte-level BPE: decoding prompt and continuation together keeps a character split between them whole.
    return tokenizer.decode(new_ids if cfg.chat else prompt_ids + new_ids)
