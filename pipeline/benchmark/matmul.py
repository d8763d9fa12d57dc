"""Dense matmul throughput of one device against its datasheet peak (``train.mfu.PEAK_FLOPS``).

The ceiling MFU is read against: a GPU whose square bf16 matmul reaches well under its usual share of
peak (an H200 measured ~790 of its 989 dense TFLOP/s, ~80%) is throttled, misconfigured or sick, and
no training run on it will reach its usual MFU either.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from pipeline.benchmark.collectives import synchronize
from pipeline.train.mfu import peak_flops

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class MatmulResult:
    n: int
    """The matrices are n x n."""
    precision: str
    tflops: float
    """Median over the timed rounds, 10^12 FLOP/s (2n^3 per matmul)."""
    peak_tflops: float | None
    """The table's dense peak for this device and precision; None on a CPU or an unknown GPU."""
    fraction_of_peak: float | None


def measure_matmul(
    n: int, precision: str, device: torch.device, *, rounds: int = 5, per_round: int = 10
) -> MatmulResult:
    """``rounds`` timed rounds of ``per_round`` back-to-back n x n matmuls (one untimed round first: kernel
    selection, clocks ramping up); the median round's rate. Back to back, as a training step issues them,
    so launch latency hides behind the previous kernel, unlike a matmul timed alone."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=DTYPES[precision], generator=generator)
    b = torch.randn(n, n, device=device, dtype=DTYPES[precision], generator=generator)
    out = torch.empty_like(a)
    rates = []
    for round_index in range(rounds + 1):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(per_round):
            torch.matmul(a, b, out=out)
        synchronize(device)
        if round_index:
            rates.append(2 * n**3 * per_round / (time.perf_counter() - start))
    peak = peak_flops(device, precision)
    rate = statistics.median(rates)
    return MatmulResult(
        n=n,
        precision=precision,
        tflops=rate / 1e12,
        peak_tflops=None if peak is None else peak / 1e12,
        fraction_of_peak=None if peak is None else rate / peak,
    )
