"""The one entry point of every task-array element: ``python -m launch.slurm.task PLAN INDEX``.

The executor that submitted the array wrote PLAN (``{"stage", "config", "tasks"}``); the element
does task INDEX of it. What doing a task means belongs to its job kind, named by the plan's stage
and registered in ``KINDS`` as a ``module:function`` string that is imported here, in the element,
only when it runs: this layer imports none of the kinds, so any part of the repo can have one.
The function gets the plan and the index, rebuilds and checks the config, skips a task whose
completion marker is already there, and raises on failure. Exit 0 on success, 2 on a usage error;
a failure prints its traceback to the element's log and exits 1.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

USAGE = "usage: python -m launch.slurm.task PLAN.json INDEX"
PREP_KIND = "data_prep.executor.task_main:run_element"
KINDS = {
    "prep": PREP_KIND,
    "cluster": PREP_KIND,
    "dedup": PREP_KIND,
    "tokenize": "data_prep.tokenizer.task_main:run_element",
}
"""A plan's stage -> ``module:function`` that does one task of it: ``function(plan, index)``."""

TaskRunner = Callable[[dict[str, Any], int], None]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    plan = json.loads(Path(args[0]).read_text())
    if plan["stage"] not in KINDS:
        print(
            f"lmpipe: {args[0]}: stage {plan['stage']!r} has no task kind; known: {', '.join(KINDS)}",
            file=sys.stderr,
        )
        return 2
    runner(KINDS[plan["stage"]])(plan, int(args[1]))
    return 0


def runner(target: str) -> TaskRunner:
    """The function a ``module:function`` string names."""
    module, _, function = target.partition(":")
    run: TaskRunner = getattr(importlib.import_module(module), function)
    return run


if __name__ == "__main__":
    sys.exit(main())
