"""Greedy ``lmpipe generate`` equals ``transformers``' ``generate`` on the Hugging Face export of the
same trained checkpoint: token for token, on a batch of left-padded prompts of unequal lengths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config.eval import GenerateJobConfig
from pipeline.eval.generate import complete
from pipeline.hf.export import export_hf
from pipeline.testing import require_module
from pipeline.train.checkpoint import load_model_for_inference, resolve_checkpoint

PROMPTS = ["Branford", "The river runs past the old mill and", "In the", "A man who lived in the town of"]
NEW_TOKENS = 24


def until_eos(ids: list[int], eos: int) -> list[int]:
    """The generated ids up to and including the first EOS: what both sides mean by the completion."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


@pytest.fixture(scope="module")
def exported(pretrained: Path, tmp_path_factory) -> Path:
    return export_hf(pretrained, tmp_path_factory.mktemp("parity") / "hf")


@pytest.mark.slow  # importing transformers and exporting take seconds
def test_greedy_generate_equals_transformers_token_for_token(pretrained, exported):
    transformers = require_module("transformers")
    model, _, tokenizer = load_model_for_inference(resolve_checkpoint(pretrained))
    eos = tokenizer.token_to_id("<|eos|>")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported, padding_side="left")
    if hf_tokenizer.pad_token is None:
        hf_tokenizer.pad_token = hf_tokenizer.eos_token
    batch = hf_tokenizer(PROMPTS, add_special_tokens=False, padding=True, return_tensors="pt")
    contexts = [tokenizer.encode(p, add_special_tokens=False).ids for p in PROMPTS]
    assert len(set(map(len, contexts))) == len(PROMPTS)  # unequal lengths: real left padding
    for row, ids in enumerate(contexts):  # the export's tokenizer reads the prompts as ours does
        assert batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist() == ids
    theirs_model = transformers.LlamaForCausalLM.from_pretrained(exported).eval()
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        theirs = theirs_model.generate(
            **batch,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=hf_tokenizer.pad_token_id,
        )[:, width:]
        ours = model.generate(
            batch["input_ids"], NEW_TOKENS, temperature=0, eos_id=eos, valid=batch["attention_mask"].bool()
        )[:, width:]
    ours_ids = [until_eos(row, eos) for row in ours.tolist()]
    theirs_ids = [until_eos(row, eos) for row in theirs.tolist()]
    assert ours_ids == theirs_ids
    assert sum(map(len, ours_ids)) > len(PROMPTS) * 4  # not all at EOS at once: a real comparison
    # What the user sees: `lmpipe generate` over a prompts file, the four prompts in one batch.
    prompts = exported.parent / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    records = complete(
        GenerateJobConfig(
            checkpoint=str(pretrained),
            prompts=str(prompts),
            temperature=0,
            max_new_tokens=NEW_TOKENS,
            batch_size=len(PROMPTS),
        )
    )
    for record, context, ids in zip(records, contexts, theirs_ids):
        new = [token for token in ids if token != eos]
        whole = hf_tokenizer.decode(context + new)
        assert record["prompt"] + record["completion"] == whole
