"""What every verb's parser shares: ``--config`` and dotted overrides, and loading the config from them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pipeline.core.config import Config


def verb(
    subparsers: Any, name: str, help_text: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    verb = subparsers.add_parser(name, help=help_text, description=help_text)
    verb.add_argument("--config", help="YAML config file (defaults are built in)")
    verb.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    verb.set_defaults(run=run)
    return verb


def load_config(cls: type[Config], args: argparse.Namespace, **flag_values: Any) -> Any:
    return cls.load(args.config, args.overrides, values=flag_values)
