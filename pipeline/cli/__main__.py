"""``python -m pipeline.cli``: what torchrun, the deepspeed launcher and Slurm scripts run on every rank."""

import sys

from pipeline.cli.main import main

sys.exit(main())
