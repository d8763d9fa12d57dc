"""Fine-tuning records: chat records read from JSONL or a local Hugging Face dataset, as conversations.

See ``finetune.data`` for the record formats and the ``Layout`` that ``data.columns`` and ``data.roles``
describe; this module reads records (``iter_records``) and checks each is a conversation we can
learn from (``conversation``), raising ``BadRecord`` (counted and named, then skipped) when not.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import InputError, MissingInputError

ROLE_NAMES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "human": "user",
    "gpt": "assistant",
}
"""Role names read without ``data.roles``: ours, and ShareGPT's."""
BUILDERS = {".json": "json", ".parquet": "parquet", ".arrow": "arrow"}
"""File suffix -> ``datasets`` packaged builder (.jsonl is read line by line, to name lines)."""
SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


class BadRecord(ValueError):
    """A record that is not a conversation we can learn from; the message says why."""


Message = dict[str, str]


def iter_records(path: str | Path, *, split: str = "train") -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for every record of ``path``; ``where`` is ``file:line`` or ``path[split]#row``.
    A JSONL line that is not JSON comes as a ``BadRecord`` in place of the record."""
    path = Path(path)
    if path.is_file() and path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield f"{path}:{number}", json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield f"{path}:{number}", BadRecord(f"not valid JSON ({exc.msg})")
        return
    dataset, name = _load_dataset(path, split=split)
    for row, record in enumerate(dataset):
        yield f"{name}#{row}", record


def _load_dataset(path: Path, *, split: str) -> tuple[Any, str]:
    """A local Hugging Face dataset and the name its rows are reported by; never a download."""
    import datasets

    if path.is_dir():
        if not any((path / marker).is_file() for marker in SAVED_MARKERS):
            raise MissingInputError(
                f"{path}: not a dataset saved with save_to_disk (none of "
                f"{', '.join(SAVED_MARKERS)}); give that directory or one data file"
            )
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise InputError(f"{path} has no split {split!r} (data.split); it has {', '.join(loaded)}")
            return loaded[split], f"{path}[{split}]"
        return loaded, str(path)
    if path.is_file():
        builder = BUILDERS.get(path.suffix)
        if builder is None:
            raise InputError(
                f"{path}: SFT data must be .jsonl, {', '.join(BUILDERS)} or a save_to_disk directory"
            )
        with tempfile.TemporaryDirectory() as cache:  # in memory: no cache left behind, none gone stale
            return datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True
            ), str(path)
    raise MissingInputError(
        f"SFT data not found: {path} (data.path is a local .jsonl/.json/.parquet/.arrow "
        "file or a save_to_disk directory; Hugging Face hub names are not downloaded)"
    )


@dataclass(frozen=True)
class Layout:
    """Where a record keeps its conversation and what it calls the roles. Each key tuple lists the
    names tried in order (the first present wins); the defaults read ours and ShareGPT's."""

    prompt: str = "prompt"
    response: str = "response"
    messages: tuple[str, ...] = ("messages", "conversations")
    role: tuple[str, ...] = ("role", "from")
    content: tuple[str, ...] = ("content", "value")
    roles: Mapping[str, str] = field(default_factory=lambda: dict(ROLE_NAMES))
    """The data's role name -> ours (system, user, assistant)."""

    @classmethod
    def of(cls, columns: Mapping[str, str] = {}, roles: Mapping[str, str] = {}) -> Layout:
        """From ``data.columns`` (our field -> the data's name; a named field is looked for under that
        name only) and ``data.roles`` (more role names, theirs -> ours)."""
        named = {key: (columns[key],) for key in ("messages", "role", "content") if key in columns}
        return cls(
            prompt=columns.get("prompt", "prompt"),
            response=columns.get("response", "response"),
            **named,
            roles={**ROLE_NAMES, **roles},
        )


def conversation(record: Any, layout: Layout = Layout(), *, last: str = "assistant") -> list[Message]:
    """The messages of a record, in our role names (prompt/response becomes one user and one assistant
    turn), ending with a ``last`` turn; ``BadRecord`` says what is wrong."""
    if isinstance(record, BadRecord):
        raise record
    if not isinstance(record, Mapping):
        raise BadRecord("expected an object")
    found = _first_present(record, layout.messages)
    if found is not None:
        messages = record[found]
        if not isinstance(messages, Sequence) or isinstance(messages, str):
            raise BadRecord(f"'{found}' is not a list of messages")
        messages = [_message(m, i, layout) for i, m in enumerate(messages)]
    elif isinstance(record.get(layout.prompt), str) and isinstance(record.get(layout.response), str):
        messages = [
            {"role": "user", "content": record[layout.prompt]},
            {"role": "assistant", "content": record[layout.response]},
        ]
    else:
        raise BadRecord(
            f"expected {_either(layout.messages)}, or string fields '{layout.prompt}' and '{layout.response}'"
        )
    _check_turns(messages, last=last)
    return messages


def _message(message: Any, i: int, layout: Layout) -> Message:
    if not isinstance(message, Mapping):
        raise BadRecord(f"message {i} is not an object")
    content = message.get(_first_present(message, layout.content) or "")
    if not isinstance(content, str):
        raise BadRecord(f"message {i} has no string {_either(layout.content)}")
    role = message.get(_first_present(message, layout.role) or "")
    if not (isinstance(role, str) and role in layout.roles):
        raise BadRecord(
            f"message {i} has role {role!r}, not one of {', '.join(layout.roles)} "
            "(data.roles maps other names to ours)"
        )
    return {"role": layout.roles[role], "content": content}


def _first_present(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` with a value: a dataset whose rows differ in layout has None in the others."""
    return next((key for key in keys if mapping.get(key) is not None), None)


def _either(keys: tuple[str, ...]) -> str:
    return " or ".join(f"'{key}'" for key in keys)


def _check_turns(messages: list[Message], *, last: str) -> None:
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not turns:
        raise BadRecord("no user or assistant turn")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise BadRecord(
                f"turn {i} is {message['role']}, expected {expected} (an optional system message "
                "first, then user and assistant alternating)"
            )
        if expected == "assistant" and not message["content"].strip():
            raise BadRecord(f"turn {i} is an empty assistant turn")
    if turns[-1]["role"] != last:
        raise BadRecord(f"the last turn is {turns[-1]['role']}, not {last}")
