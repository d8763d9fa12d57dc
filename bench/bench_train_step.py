"""A training step of lmpipe's model vs ``transformers``' LlamaForCausalLM of the same shape, tokens/s.

A step is forward + cross-entropy + backward + AdamW step on one (8, 256) batch, fp32 on
CPU, the same torch thread count for both (``OMP_NUM_THREADS``, else one per core). The
anchor is the reference implementation of the architecture ours follows (RMSNorm,
rotate-half RoPE, GQA, SwiGLU, tied embeddings), stock: configured to the identical shape
with SDPA attention and no dropout, its own loss (``labels=``), and a plain
``torch.optim.AdamW`` with our hyper-parameters, as its users run it. The parameter counts
are asserted equal, and both do the same matmuls; the ratio is what our own code does
differently, which is all in ``pipeline``, none of it special to this bench:

- the output head and the cross-entropy are fused (``model.linear_cross_entropy``): the logits
  are made, soft-maxed and turned into gradients chunk by chunk while in cache, instead of
  writing and rereading (tokens x vocab) tensors four times; the bulk of the gain at ``tiny``;
- causal attention on the CPU goes one block of 64 queries at a time against only the keys
  it can see (``model.causal_attention``): at T = 256 the CPU SDPA kernel scores all keys;
- AdamW uses torch's fused kernel on the CPU too (``optim.use_fused``), where the default is
  the per-tensor loop of a dozen elementwise passes;
- RMSNorm is ``nn.RMSNorm`` (a fused forward kernel), the anchor's is hand-written.

Measured on the 2-core development machine (shared with other jobs): this script, in a quiet
spell, ``tiny`` 1.21x / 1.22x and ``14m`` 1.06x / 1.03x at one / two threads; under load its
wall-clock ratios swing (``tiny`` 1.14-1.24x, ``14m`` 0.92-1.11x at one thread), while the
per-step CPU time of ours vs the anchor, interleaved, stays at ``tiny`` 1.22x and ``14m``
1.02-1.05x (before these changes 1.00x and 0.98x). At ``14m`` the layers' matmuls, identical
in both and at the BLAS's peak, are ~85% of the step, which bounds any gain from the code
around them to ~1.15x. On a loaded machine judge with one thread: other processes stall a
pool of two. Random tokens: speed does not depend on them.

Run: ``OMP_NUM_THREADS=1 python bench/bench_train_step.py [--quick]`` (``--quick``: size ``tiny`` only).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from time import perf_counter

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.model.args import ModelArgs
from pipeline.model.transformer import build_model
from pipeline.parallel.optim import build_optimizer

BATCH, SEQ, VOCAB = 8, 256, 8192
STEPS = {"tiny": 5, "14m": 2}
"""Steps per timed round: a round of each model takes a few seconds."""


def hf_twin(args: ModelArgs) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.d_model,
        intermediate_size=args.ffn_hidden,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads,
        head_dim=args.head_dim,
        max_position_embeddings=args.seq_len,
        rms_norm_eps=args.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta},
        tie_word_embeddings=args.tie_embeddings,
        attention_dropout=0.0,
        attention_bias=False,
        mlp_bias=False,
        use_cache=False,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config)
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    return model


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied tensor is yielded once


def step_fns(size: str) -> tuple[dict[str, Callable[[], None]], int]:
    """One training step of each model (closures over model, optimizer, batch), and the parameter count."""
    args = ModelConfig(size=size, seq_len=SEQ).args(vocab_size=VOCAB)
    ours = build_model(args, device="cpu")
    ours.init_weights()
    ours.train()
    theirs = hf_twin(args).train()
    n_ours, n_theirs = num_params(ours), num_params(theirs)
    assert n_ours == n_theirs, f"{size}: ours has {n_ours:,} parameters, LlamaForCausalLM {n_theirs:,}"
    loop = LoopConfig()
    opt_ours = build_optimizer(ours, loop)
    opt_theirs = torch.optim.AdamW(
        theirs.parameters(), lr=loop.lr, betas=(loop.beta1, loop.beta2), weight_decay=loop.weight_decay
    )
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0))
    x, y = tokens[:, :-1], tokens[:, 1:]

    def ours_step() -> None:
        opt_ours.zero_grad(set_to_none=True)
        _, loss = ours(x, y)
        loss.backward()
        opt_ours.step()

    def theirs_step() -> None:
        opt_theirs.zero_grad(set_to_none=True)
        theirs(input_ids=x, labels=x).loss.backward()  # stock usage: labels shifted inside
        opt_theirs.step()

    return {"ours": ours_step, "anchor": theirs_step}, n_ours


def median_tokens_per_second(
    fns: dict[str, Callable[[], None]], steps: int, reps: int = 3
) -> dict[str, float]:
    """One warm-up step of each, then ``reps`` rounds of ``steps`` steps, interleaved so drift hits both
    alike."""
    for fn in fns.values():
        fn()
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = perf_counter()
            for _ in range(steps):
                fn()
            rates[name].append(steps * BATCH * SEQ / (perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="size tiny only")
    args = parser.parse_args()
    threads = torch.get_num_threads()  # OMP_NUM_THREADS, else torch's default: one per core
    torch.manual_seed(0)
    rows = []
    for size in ["tiny"] if args.quick else ["tiny", "14m"]:
        fns, n_params = step_fns(size)
        rates = median_tokens_per_second(fns, STEPS[size])
        rows.append((size, n_params, rates["ours"], rates["anchor"]))
    print(f"\ntrain step, fp32, batch {BATCH}x{SEQ}, vocab {VOCAB}, {threads} threads")
    print(f"{'size':<6} {'params (both)':>14} {'ours tok/s':>11} {'anchor tok/s':>13} {'ratio':>7}")
    for size, n_params, ours_rate, anchor_rate in rows:
        print(
            f"{size:<6} {n_params:>14,} {ours_rate:>11,.0f} {anchor_rate:>13,.0f} "
            f"{ours_rate / anchor_rate:>6.2f}x"
        )
    print(
        "anchor: transformers LlamaForCausalLM (sdpa, same shape, tied embeddings) + torch AdamW; "
        "ours: fused head + loss, blockwise causal attention, fused AdamW; median of 3 after a warm-up"
    )


if __name__ == "__main__":
    main()
