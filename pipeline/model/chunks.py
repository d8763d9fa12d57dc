"""How many logits the fused head and loss (``pipeline.model.loss``) hold at once.

Torch-free, so that the memory planner (``pipeline.plan.memory``) sizes the loss's working set without
importing torch: every ``lmpipe`` verb builds its parser from the plan module, and a CLI that imports
torch to print its help costs seconds per call.
"""

from __future__ import annotations

LOSS_CHUNK_LOGITS = 1 << 21
"""Logits per chunk of the fused head + loss on the CPU (8 MiB in fp32): small enough to stay in cache
from the matmul that makes them, through the softmax, to the two matmuls of the gradient."""

LOSS_CHUNK_ROWS = 4096
"""Rows per chunk of the fused head + loss off the CPU. A chunk holds its logits in the compute dtype, an
fp32 copy turned into the softmax and its gradient in the compute dtype: about 10 bytes per logit, so one
chunk of all rows would be 20 GiB at 16k tokens and a 128k vocabulary; 4096 rows keep it near 5 GiB and
each matmul still large enough to run at full speed."""
