"""A fine-tuning step vs a pretraining step of the same model and batch shape, tokens/s.

Issue 8's target: fine-tuning runs within 10% of pretraining's step throughput at the same shape.
What differs in a fine-tuning step is only the batch: prompt tokens and padding carry no loss
(``IGNORE_INDEX`` targets), and with ``data.packing`` several examples share a row and attention
stays inside each (``document_mask`` from the rows' ``doc_starts``). The batches here come from
``sft_data.SFTDataset`` itself, over chat-sized examples (15-120 tokens, the first ~40% prompt),
so the padding and packing layout are the real ones; token ids are random, which speed does not
depend on. Tokens/s counts every position of the (B, T) batch for all three, per second of this
process's CPU time, in interleaved rounds: on a shared machine wall-clock ratios swing by 20% from
round to round while CPU time stays put (run it with one thread, where CPU time is the step's time).

Measured on the 2-core development machine, one thread: ``tiny`` padded 0.97-1.00x, packed
0.96-1.03x of pretraining; ``14m`` 0.99x and 1.00x. Packed batches go through the same blockwise
CPU attention as causal ones (``model.causal_attention``, with the document mask sliced per block).

Run: ``OMP_NUM_THREADS=1 python bench/bench_finetune_step.py [--size tiny|14m]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from time import process_time

import numpy as np
import torch
from timing import median_seconds

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.finetune.data import Example, SFTDataset
from pipeline.model.loss import IGNORE_INDEX
from pipeline.model.transformer import build_model
from pipeline.parallel.optim import build_optimizer

BATCH, SEQ, VOCAB = 8, 256, 8192
STEPS = {"tiny": 5, "14m": 2}


def chat_examples(n: int, rng: np.random.Generator) -> list[Example]:
    """``n`` examples of 15-120 tokens whose first ~40% (the prompt) is not learned."""
    examples = []
    for _ in range(n):
        length = int(rng.integers(15, 121))
        tokens = rng.integers(0, VOCAB, length + 1).tolist()
        prompt = int(length * 0.4)
        targets = [IGNORE_INDEX] * prompt + tokens[prompt + 1 :]
        examples.append(Example(tokens[:-1], targets, truncated=False))
    return examples


def batches(rng: np.random.Generator) -> dict[str, tuple]:
    """One (B, T) batch per variant: pretraining, fine-tuning padded (one example a row), packed."""
    tokens = torch.from_numpy(rng.integers(0, VOCAB, (BATCH, SEQ + 1)))
    examples = chat_examples(BATCH * 8, rng)
    padded = SFTDataset(examples[:BATCH], seq_len=SEQ, pad=0)
    packed = SFTDataset(examples, seq_len=SEQ, pad=0, packing=True)
    assert packed.doc_starts is not None and len(packed) >= BATCH, len(packed)
    return {
        "pretrain": (tokens[:, :-1], tokens[:, 1:], None),
        "finetune": (padded.inputs, padded.targets, None),
        "finetune packed": (packed.inputs[:BATCH], packed.targets[:BATCH], packed.doc_starts[:BATCH]),
    }


def step_fns(size: str, steps: int) -> tuple[dict[str, Callable[[], int]], dict[str, float]]:
    """``steps`` training steps per variant, returning the positions they covered (one model and
    optimizer: the batch is all that differs), and the fraction of each batch's positions with a loss."""
    args = ModelConfig(size=size, seq_len=SEQ).args(vocab_size=VOCAB)
    model = build_model(args, device="cpu")
    model.init_weights()
    model.train()
    optimizer = build_optimizer(model, LoopConfig())
    variants = batches(np.random.default_rng(0))

    def steps_of(inputs: torch.Tensor, targets: torch.Tensor, doc_starts: list | None) -> Callable[[], int]:
        def run() -> int:
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                _, loss = model(inputs, targets, doc_starts=doc_starts)
                loss.backward()
                optimizer.step()
            return steps * inputs.numel()

        return run

    learned = {name: float((batch[1] != IGNORE_INDEX).float().mean()) for name, batch in variants.items()}
    return {name: steps_of(*batch) for name, batch in variants.items()}, learned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        choices=sorted(STEPS),
        action="append",
        help="model size (repeatable; default: tiny and 14m)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"train step, fp32, batch {BATCH}x{SEQ}, vocab {VOCAB}, {torch.get_num_threads()} threads")
    print(f"{'size':<6} {'variant':<16} {'loss positions':>14} {'tok/s':>9} {'vs pretrain':>12}")
    for size in args.size or ["tiny", "14m"]:
        fns, learned = step_fns(size, STEPS[size])
        seconds, positions = median_seconds(fns, reps=5, clock=process_time)
        rates = {name: positions[name] / seconds[name] for name in fns}
        for name, rate in rates.items():
            print(
                f"{size:<6} {name:<16} {learned[name]:>14.0%} {rate:>9,.0f} "
                f"{rate / rates['pretrain']:>11.2f}x"
            )
    print(
        "tokens/s: every position of the batch per CPU second; median of 5 interleaved rounds after a warm-up"
    )


if __name__ == "__main__":
    main()
