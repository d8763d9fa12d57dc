"""Evaluation and generation run where the model is (issue 20: CUDA failed on host tensors). With no GPU
here the model goes on the ``meta`` device, which takes any device's path but refuses a tensor of another
device, exactly as CUDA does: every tensor the code makes or receives from the host must be moved."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models
from torch import nn

from pipeline.config.model import ModelConfig
from pipeline.eval.evaluate import _lm_summary
from pipeline.model.generation import sampling_generator
from pipeline.model.loss import IGNORE_INDEX
from pipeline.model.transformer import build_model

VOCAB = 97


def test_sampling_generator_is_seeded_on_the_requested_device():
    a, b = sampling_generator(torch.device("cpu"), 7), sampling_generator("cpu", 7)
    assert a.device == torch.device("cpu") and a.initial_seed() == 7
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))


def test_generate_moves_host_prompts_to_the_models_device():
    model = build_model(ModelConfig(size="tiny", seq_len=32).args(vocab_size=VOCAB), device="meta")
    prompts = torch.randint(0, VOCAB, (2, 5))  # made on the host, as ``generate.complete_batch`` does
    valid = torch.tensor([[False, True, True, True, True], [True] * 5])
    for sampling in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": 3, "top_p": 0.9}):
        out = model.generate(prompts, 40, valid=valid, **sampling)  # past seq_len: the sliding window too
        assert out.device.type == "meta" and out.shape == (2, 45)


class DeviceCheckingModel(nn.Module):
    """Stands in for the model in ``_lm_summary``: its weights are on ``meta`` and it refuses inputs that
    are not, as a model on CUDA would; its summed loss is the number of scored targets."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(VOCAB, 4, device="meta")

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor, *, reduction: str
    ) -> tuple[None, torch.Tensor]:
        assert inputs.device == targets.device == self.tok_embeddings.weight.device, "host batch not moved"
        assert reduction == "sum"
        return None, torch.tensor(float(targets.shape.numel() - 2))


def test_lm_eval_moves_host_batches_to_the_models_device():
    inputs = torch.randint(0, VOCAB, (2, 8))
    targets = inputs.clone()
    targets[0, :2] = IGNORE_INDEX
    batches = [("web", inputs, targets), ("code", inputs, targets)]
    summary = _lm_summary(DeviceCheckingModel(), batches, Tokenizer(models.BPE()), per_source=True)
    assert summary["tokens"] == 28 and summary["loss"] == 1.0 and summary["batches"] == 2
