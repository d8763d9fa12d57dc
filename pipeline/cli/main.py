"""``lmpipe``: one console script, thin on purpose.

Each verb parses its flags, loads and validates its whole config (``--config`` file,
then the flags, then dotted ``key.sub=value`` overrides) and only then imports the
heavy module that does the work. User errors end as one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pipeline.cli import bench, data, demo, hf, launch, plan, sweep, tracking, train
from pipeline.cli import eval as evaluate
from pipeline.core.errors import UserError

USER_ERRORS = (UserError,)
"""What ends as one ``lmpipe: error: ...`` line and exit 2; anything else is a bug and keeps its traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result = args.run(args)
    except USER_ERRORS as exc:
        if os.environ.get("LMPIPE_DEBUG"):
            raise
        if os.environ.get("RANK", "0") == "0":  # under torchrun, say it once
            print(f"lmpipe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmpipe: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmpipe",
        description="Raw web and encyclopedia text to trained, compared language models.",
        epilog="Every verb takes --config FILE.yaml and dotted overrides such as train.lr=3e-4.",
    )
    verbs = parser.add_subparsers(title="verbs", metavar="VERB")
    for group in (demo, data, train, evaluate, hf, sweep, plan, bench, launch, tracking):
        group.add_parsers(verbs)
    parser.set_defaults(root_parser=parser)
    return parser
