"""A model trained on CUDA (bf16 ddp, ``gpu_helpers.TrainedRuns``), then used as a user would: ``lmpipe
generate`` and ``lmpipe eval`` on the GPU give what they give on the CPU, and its Hugging Face export runs
in ``transformers`` on the GPU with our logits.

Inference is fp32 (bf16 training keeps fp32 weights under autocast), so CUDA and the CPU differ only in
summation order, ~1e-6 relative: greedy tokens agree exactly (a flip needs two logits within 1e-6 of each
other), losses to 1e-5. TF32 is off, as in a fresh ``lmpipe generate`` or ``eval`` process: only a training
job turns it on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from gpu_helpers import GPU_MARKS

from pipeline.config.eval import EvalJobConfig, EvalTrackingConfig, GenerateJobConfig
from pipeline.eval.evaluate import evaluate
from pipeline.eval.generate import complete
from pipeline.hf.export import export_hf
from pipeline.testing import require_module
from pipeline.train.checkpoint import load_model_for_inference

pytestmark = GPU_MARKS

PROMPTS = ["Branford", "The river runs past the old mill and", "In the", "A man who lived in the town of"]
NEW_TOKENS = 24
LOGITS_ATOL = 1e-3
"""Logits of up to ~20 in fp32, CUDA vs the CPU: ~1e-5 apart; a wrong weight mapping is off by ~1."""


@pytest.fixture
def checkpoint(runs) -> Path:
    return runs.bf16("ddp").output


@pytest.fixture(autouse=True)
def no_tf32(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def on_cuda(job: Callable[[], Any]) -> Any:
    """``job()``, checking that it put something on the GPU (``inference_device`` picked CUDA)."""
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = job()
    assert torch.cuda.max_memory_allocated() > before, "nothing was allocated on the GPU"
    return out


def on_cpu(monkeypatch, module: str, job: Callable[[], Any]) -> Any:
    """``job()`` with ``module``'s ``inference_device`` the CPU, as on a machine without a GPU."""
    with monkeypatch.context() as patch:
        patch.setattr(f"{module}.inference_device", lambda: torch.device("cpu"))
        return job()


def test_greedy_generation_on_cuda_equals_the_cpu(checkpoint, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    cfg = GenerateJobConfig(
        checkpoint=str(checkpoint),
        prompts=str(prompts),
        temperature=0,
        max_new_tokens=NEW_TOKENS,
        batch_size=len(PROMPTS),  # one left-padded batch: the padding mask and KV cache on the GPU too
    )
    gpu = on_cuda(lambda: complete(cfg))
    assert on_cpu(monkeypatch, "pipeline.eval.generate", lambda: complete(cfg)) == gpu
    assert [record["prompt"] for record in gpu] == PROMPTS
    assert sum(len(record["completion"]) for record in gpu) >= 4 * len(PROMPTS)  # not all EOS at once


def test_evaluation_on_cuda_equals_the_cpu_and_the_training_validation(
    checkpoint, runs, tiny_corpus, monkeypatch
):
    # 2 batches of 4 per source: the 8 windows per source that training validated on (data.val_windows).
    cfg = EvalJobConfig(
        checkpoint=str(checkpoint),
        shards=str(tiny_corpus[0]),
        batch_size=4,
        max_batches=2,
        tracking=EvalTrackingConfig(enabled=False),
    )
    gpu = on_cuda(lambda: evaluate(cfg))["lm"]
    cpu = on_cpu(monkeypatch, "pipeline.eval.evaluate", lambda: evaluate(cfg))["lm"]
    assert (gpu["tokens"], gpu["batches"]) == (cpu["tokens"], cpu["batches"]) and gpu["tokens"] > 0
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-5) and math.isfinite(gpu["loss"])
    assert gpu["by_source"].keys() == cpu["by_source"].keys()
    for source, metrics in gpu["by_source"].items():
        assert metrics["loss"] == pytest.approx(cpu["by_source"][source]["loss"], rel=1e-5), source
    # Training validated the same windows under bf16 autocast: equal to bf16 rounding (2e-4 on the CPU).
    assert gpu["loss"] == pytest.approx(runs.bf16("ddp").result["final_val_loss"], rel=2e-3)


def test_hf_export_of_the_cuda_trained_model_runs_in_transformers_on_cuda(checkpoint, tmp_path, monkeypatch):
    transformers = require_module("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    exported = export_hf(checkpoint, tmp_path / "hf")
    ours, args, _ = load_model_for_inference(checkpoint)  # the CPU reference
    tokens = torch.randint(0, args.vocab_size, (2, args.seq_len), generator=torch.Generator().manual_seed(0))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(exported).to("cuda").eval()
    assert type(theirs).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        expected = ours(tokens)
        logits = theirs(tokens.cuda()).logits.float().cpu()
    assert logits.shape == expected.shape
    diff = (logits - expected).abs().max().item()
    assert diff <= LOGITS_ATOL, diff
