"""Chat records beyond our own layout: ShareGPT out of the box, other layouts through ``data.columns``
and ``data.roles``, unknown roles as counted bad records, and a system message in either template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from pipeline.cli.main import main
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.finetune.data import SYSTEM, ChatTokens, read_examples, render
from pipeline.model.loss import IGNORE_INDEX
from pipeline.train.checkpoint import load_tokenizer

SYSTEM_TEXT = "Answer briefly."
CONVERSATION = [  # ours: system, then two user/assistant exchanges
    {"role": "system", "content": SYSTEM_TEXT},
    {"role": "user", "content": "Which river is Branford on?"},
    {"role": "assistant", "content": "The river Lorn."},
    {"role": "user", "content": "And Ashby?"},
    {"role": "assistant", "content": "The river Tane."},
]
SHAREGPT_NAMES = {"system": "system", "user": "human", "assistant": "gpt"}


@pytest.fixture(scope="module")
def tokenizer(tiny_corpus) -> Tokenizer:
    return load_tokenizer(tiny_corpus[0] / "tokenizer.json")


@pytest.fixture(scope="module")
def with_system_token(tokenizer) -> Tokenizer:
    extended = Tokenizer.from_str(tokenizer.to_str())
    extended.add_special_tokens([SYSTEM])
    return extended


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def sharegpt(
    messages: list[dict[str, str]],
    names: dict[str, str] = SHAREGPT_NAMES,
    *,
    role: str = "from",
    content: str = "value",
) -> list[dict[str, str]]:
    return [{role: names[m["role"]], content: m["content"]} for m in messages]


def examples_of(path: Path, tokenizer: Tokenizer, **layout) -> list:
    examples, _ = read_examples(path, tokenizer, seq_len=64, val_fraction=0.0, **layout)
    return examples["train"]


def test_sharegpt_records_give_the_examples_of_our_messages(tokenizer, tmp_path):
    ours = write_jsonl(tmp_path / "ours.jsonl", [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:3]}])
    want = examples_of(ours, tokenizer)
    assert len(want) == 2
    gpt = write_jsonl(
        tmp_path / "sharegpt.jsonl",
        [
            {"conversations": sharegpt(CONVERSATION), "id": "a"},
            {"conversations": sharegpt(CONVERSATION[1:3])},
        ],
    )
    assert examples_of(gpt, tokenizer) == want
    plain_roles = write_jsonl(
        tmp_path / "mixed.jsonl",
        [  # ShareGPT keys with our role names, and the reverse
            {"conversations": sharegpt(CONVERSATION, {r: r for r in SHAREGPT_NAMES})},
            {"messages": sharegpt(CONVERSATION[1:3], role="role", content="content")},
        ],
    )
    assert examples_of(plain_roles, tokenizer) == want


def test_sharegpt_in_a_parquet_file_reads_like_jsonl(tokenizer, tmp_path):
    import datasets

    rows = [sharegpt(CONVERSATION), sharegpt(CONVERSATION[1:3])]
    datasets.Dataset.from_dict({"conversations": rows}).to_parquet(str(tmp_path / "chats.parquet"))
    want = examples_of(
        write_jsonl(tmp_path / "ours.jsonl", [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:3]}]),
        tokenizer,
    )
    assert examples_of(tmp_path / "chats.parquet", tokenizer) == want


def test_columns_and_roles_map_other_layouts(tokenizer, tmp_path):
    want = examples_of(write_jsonl(tmp_path / "ours.jsonl", [{"messages": CONVERSATION}]), tokenizer)
    names = {"system": "instructions", "user": "customer", "assistant": "agent"}
    theirs = write_jsonl(
        tmp_path / "theirs.jsonl",
        [{"dialogue": sharegpt(CONVERSATION, names, role="speaker", content="text")}],
    )
    layout = {
        "columns": {"messages": "dialogue", "role": "speaker", "content": "text"},
        "roles": {"instructions": "system", "customer": "user", "agent": "assistant"},
    }
    assert examples_of(theirs, tokenizer, **layout) == want
    with pytest.raises(
        ValueError, match="1 bad records skipped .*theirs.jsonl:1: message 0 has role 'instructions'"
    ):
        read_examples(
            theirs, tokenizer, seq_len=64, val_fraction=0.0, columns=layout["columns"]
        )  # no data.roles
    with pytest.raises(ValueError, match="expected 'dialogue', or"):  # a named field: that name only
        read_examples(
            write_jsonl(tmp_path / "default.jsonl", [{"messages": CONVERSATION}]),
            tokenizer,
            seq_len=64,
            val_fraction=0.0,
            columns={"messages": "dialogue"},
        )


def test_unknown_roles_are_counted_bad_records_named_by_line(tokenizer, tmp_path):
    path = write_jsonl(
        tmp_path / "roles.jsonl",
        [
            {"conversations": sharegpt(CONVERSATION)},
            {"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "b"}]},
            {"conversations": [{"from": "human", "value": "a"}, {"from": ["gpt"], "value": "b"}]},
            {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt"}]},
            {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        ],
    )
    examples, stats = read_examples(path, tokenizer, seq_len=64, val_fraction=0.0)
    assert (len(examples["train"]), stats.records, stats.bad) == (2, 5, 3)
    assert [p.split(": ")[0] for p in stats.problems] == [f"{path}:{n}" for n in (2, 3, 4)]
    assert "role 'function_call', not one of system, user, assistant, human, gpt" in stats.problems[0]
    assert "role ['gpt']" in stats.problems[1] and "no string 'content' or 'value'" in stats.problems[2]
    _, mapped = read_examples(
        path, tokenizer, seq_len=64, val_fraction=0.0, roles={"function_call": "assistant"}
    )
    assert mapped.bad == 2


def test_system_message_folds_into_the_first_user_turn_without_a_system_token(tokenizer):
    chat = ChatTokens.of(tokenizer, "tok")
    assert chat.system is None
    tokens, labels = render(tokenizer, chat, CONVERSATION)
    folded = [
        {"role": "user", "content": f"{SYSTEM_TEXT}\n\n{CONVERSATION[1]['content']}"},
        *CONVERSATION[2:],
    ]
    assert (tokens, labels) == render(tokenizer, chat, folded)
    first_user = tokenizer.encode(folded[0]["content"], add_special_tokens=False).ids
    assert tokens[: 1 + len(first_user)] == [chat.user, *first_user]


def test_system_message_gets_its_token_when_the_tokenizer_has_one(with_system_token):
    chat = ChatTokens.of(with_system_token, "tok")
    assert chat.system is not None
    tokens, labels = render(with_system_token, chat, CONVERSATION)
    system_ids = with_system_token.encode(SYSTEM_TEXT, add_special_tokens=False).ids
    rest, rest_labels = render(with_system_token, chat, CONVERSATION[1:])
    assert tokens == [chat.system, *system_ids, *rest]
    assert labels == [IGNORE_INDEX] * (1 + len(system_ids)) + rest_labels  # the system text is never learned


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.columns.speaker=from",
            "data.columns: unknown field speaker; map any of prompt, response, messages, role, content",
        ),
        ("data.columns.role=''", "data.columns: a column name must not be empty"),
        ("data.roles.bot=robot", "data.roles: bot -> 'robot': a role maps to one of system, user, assistant"),
    ],
)
def test_bad_layout_config_is_one_clear_line_before_any_work(override, message, capsys):
    assert main(["finetune", "init_from=/nonexistent", "data.path=/nonexistent.jsonl", override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_layout_config_loads_from_overrides():
    cfg = FinetuneJobConfig.load(
        None,
        ["init_from=x", "data.path=d.jsonl", "data.columns.messages=dialogue", "data.roles.bot=assistant"],
    )
    assert cfg.data.columns == {"messages": "dialogue"} and cfg.data.roles == {"bot": "assistant"}
