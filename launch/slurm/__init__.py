"""lmpipe's one Slurm stack, for every job kind it submits (training launches, sweep arrays, data-prep
and tokenize arrays), in the manner of submitit: one cluster profile (``profile``), one sbatch
renderer (``sbatch``), one job-state reader (``state``) and one entry point for task-array elements
(``task``, run as ``python -m launch.slurm.task PLAN INDEX``)."""
