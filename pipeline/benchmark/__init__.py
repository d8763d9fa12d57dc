"""``lmpipe bench node``: what one node's (or every node's) hardware delivers to lmpipe, before a long run.

Three measurements, each rank its own: all-reduce bus bandwidth (``collectives``), a square matmul's
TFLOP/s against the device's peak (``matmul``), and a timed run of the real training step with its
tokens/s per device, MFU and peak memory (``timed_run``); ``node`` runs them and reports.
"""
