"""The errors a user can fix. ``lmpipe`` prints these as one line and exits 2; anything else is a bug
and keeps its traceback.

Every class is also a ``ValueError`` (``MissingInputError`` a ``FileNotFoundError``), so callers that
caught those before keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with what the user gave (a config, a path, a file's contents); the message is one line."""


class ConfigError(UserError):
    """A config file or override that does not validate."""


class InputError(UserError):
    """Input data that cannot be used as given: a malformed file, a wrong format, an empty selection."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or directory the user named, or that a named one should hold, is not there."""


class ResumeError(UserError):
    """A refusal to resume or start from a checkpoint: another model, tokenizer, strategy state or run."""


class RunFailed(UserError):
    """A job this command started (a sweep's child run) failed; its own output, printed above, says why."""
