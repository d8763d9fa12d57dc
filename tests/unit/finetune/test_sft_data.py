"""SFT data: record formats and sources, the chat template and loss mask, length policy, bad records,
the split, rank sharding, and packing (whose per-example logits equal the example's alone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from pipeline.config.model import ModelConfig
from pipeline.finetune.data import (
    SYSTEM,
    ChatTokens,
    SFTDataset,
    SFTLoader,
    encode_example,
    read_examples,
    render,
)
from pipeline.model.loss import IGNORE_INDEX
from pipeline.model.transformer import build_model
from pipeline.train.checkpoint import load_tokenizer

PAIRS = [
    ("Which river is Branford on?", "The river Lorn."),
    ("What is Ashby known for?", "Its wool."),
    ("Which river is Ashby on?", "The river Tane."),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_corpus) -> Tokenizer:
    return load_tokenizer(tiny_corpus[0] / "tokenizer.json")


def ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def turns(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_one_turn_is_user_prompt_assistant_response_eos_with_loss_on_the_response(tokenizer):
    chat = ChatTokens.of(tokenizer, "tok")
    prompt_ids, response_ids = ids(tokenizer, PAIRS[0][0]), ids(tokenizer, PAIRS[0][1])
    example = encode_example(tokenizer, chat, turns(*PAIRS[0]), seq_len=40)
    sequence = [chat.user, *prompt_ids, chat.assistant, *response_ids, chat.eos]
    assert example.inputs == sequence[:-1] and not example.truncated
    assert [t for t in example.targets if t != IGNORE_INDEX] == [*response_ids, chat.eos]
    first = len(prompt_ids) + 1  # the <|assistant|> position predicts the first response token
    assert example.targets[:first] == [IGNORE_INDEX] * first and example.targets[first] == response_ids[0]
    row = SFTDataset([example], seq_len=40, pad=chat.pad)
    assert row.inputs[0, len(sequence) - 1 :].tolist() == [chat.pad] * (41 - len(sequence))
    assert set(row.targets[0, len(sequence) - 1 :].tolist()) == {IGNORE_INDEX}


def test_multi_turn_learns_every_assistant_turn_and_its_eos(tokenizer):
    chat = ChatTokens.of(tokenizer, "tok")
    messages = [*turns(*PAIRS[0]), *turns(*PAIRS[1])]
    tokens, labels = render(tokenizer, chat, messages)
    (p1, r1), (p2, r2) = [(ids(tokenizer, p), ids(tokenizer, r)) for p, r in PAIRS[:2]]
    assert tokens == [
        chat.user,
        *p1,
        chat.assistant,
        *r1,
        chat.eos,
        chat.user,
        *p2,
        chat.assistant,
        *r2,
        chat.eos,
    ]
    assert [t for t in labels if t != IGNORE_INDEX] == [*r1, chat.eos, *r2, chat.eos]


def test_system_message_opens_the_first_user_turn_or_gets_its_token(tokenizer):
    system = {"role": "system", "content": "Answer briefly."}
    chat = ChatTokens.of(tokenizer, "tok")
    assert chat.system is None  # our tokenizer trainer adds no <|system|>
    folded, _ = render(tokenizer, chat, [system, *turns(*PAIRS[0])])
    assert folded == render(tokenizer, chat, turns(f"Answer briefly.\n\n{PAIRS[0][0]}", PAIRS[0][1]))[0]
    with_token = Tokenizer.from_str(tokenizer.to_str())
    with_token.add_special_tokens([SYSTEM])
    chat = ChatTokens.of(with_token, "tok")
    tokens, labels = render(with_token, chat, [system, *turns(*PAIRS[0])])
    assert tokens[: 1 + len(ids(with_token, "Answer briefly."))] == [
        chat.system,
        *ids(with_token, "Answer briefly."),
    ]
    assert labels[: len(tokens) - len(ids(with_token, PAIRS[0][1])) - 1] == [IGNORE_INDEX] * (
        len(tokens) - len(ids(with_token, PAIRS[0][1])) - 1
    )


def test_overlong_examples_are_truncated_or_dropped_and_counted(tokenizer, tmp_path):
    chat = ChatTokens.of(tokenizer, "tok")
    cut = encode_example(tokenizer, chat, turns("Which river?", "The river Lorn. " * 10), seq_len=16)
    assert len(cut.inputs) == 16 and cut.truncated and chat.eos not in cut.targets
    assert encode_example(tokenizer, chat, turns("Which river is it? " * 10, "Lorn."), seq_len=16) is None
    assert (
        encode_example(
            tokenizer, chat, turns("Which river?", "The river Lorn. " * 10), seq_len=16, overlong="drop"
        )
        is None
    )
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "Which river?", "response": "The river Lorn. " * 10},
            {"prompt": "Which river is it? " * 10, "response": "Lorn."},
            {"prompt": "Which river?", "response": "Lorn."},
        ],
    )
    _, stats = read_examples(path, tokenizer, seq_len=16, val_fraction=0.0)
    assert (stats.examples["train"], stats.truncated, stats.dropped_overlong) == (2, 1, 1)
    _, stats = read_examples(path, tokenizer, seq_len=16, val_fraction=0.0, overlong="drop")
    assert (stats.examples["train"], stats.truncated, stats.dropped_overlong) == (1, 0, 2)
    assert "1 truncated" in read_examples(path, tokenizer, seq_len=16, val_fraction=0.0)[1].summary()


def test_bad_records_are_counted_named_and_skipped(tokenizer, tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "a", "response": "b"},
            "{not json",
            {"prompt": "a"},
            {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]},
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]},
            {"messages": [*turns("a", "b"), {"role": "user", "content": "c"}]},
            {"messages": [{"role": "assistant", "content": "b"}]},
            {"messages": turns("a", "b")},
        ],
    )
    examples, stats = read_examples(path, tokenizer, seq_len=32, val_fraction=0.0)
    assert len(examples["train"]) == 2 and stats.records == 8 and stats.bad == 6
    assert [p.split(": ")[0] for p in stats.problems] == [
        f"{path}:{n}" for n in (2, 3, 4, 5, 6)
    ]  # first five
    assert "not valid JSON" in stats.problems[0] and "'bot'" in stats.problems[2]
    assert "empty assistant turn" in stats.problems[3] and "6 bad records" in stats.summary()
    only_bad = write_jsonl(tmp_path / "only_bad.jsonl", [{"prompt": "a"}])
    with pytest.raises(ValueError, match=r"no usable SFT example .*only_bad.jsonl:1: expected"):
        read_examples(only_bad, tokenizer, seq_len=32, val_fraction=0.0)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_examples(tmp_path / "missing.jsonl", tokenizer, seq_len=32, val_fraction=0.0)


def test_local_hf_datasets_with_mapped_columns_give_the_jsonl_examples(tokenizer, tmp_path):
    import datasets

    records = [{"prompt": p, "response": r} for p, r in PAIRS]
    want, _ = read_examples(
        write_jsonl(tmp_path / "d.jsonl", records), tokenizer, seq_len=32, val_fraction=0.0
    )
    renamed = {"instruction": [p for p, _ in PAIRS], "output": [r for _, r in PAIRS]}
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(renamed),
            "test": datasets.Dataset.from_dict({"instruction": ["x"], "output": ["y"]}),
        }
    ).save_to_disk(str(saved))
    mapping = {"prompt": "instruction", "response": "output"}
    got, stats = read_examples(saved, tokenizer, seq_len=32, val_fraction=0.0, columns=mapping)
    assert got == want and stats.records == 3
    arrow_file = next((saved / "train").glob("*.arrow"))  # one Arrow stream file on its own
    assert read_examples(arrow_file, tokenizer, seq_len=32, val_fraction=0.0, columns=mapping)[0] == want
    chats = datasets.Dataset.from_dict({"conversations": [turns(p, r) for p, r in PAIRS]})
    chats.to_parquet(str(tmp_path / "chats.parquet"))
    chats.to_json(str(tmp_path / "chats.json"))
    for name in ("chats.parquet", "chats.json"):
        got, _ = read_examples(
            tmp_path / name, tokenizer, seq_len=32, val_fraction=0.0, columns={"messages": "conversations"}
        )
        assert got == want, name
    with pytest.raises(ValueError, match=r"no split 'validation' \(data.split\); it has train, test"):
        read_examples(saved, tokenizer, seq_len=32, val_fraction=0.0, split="validation")
    with pytest.raises(FileNotFoundError, match="hub names are not downloaded"):
        read_examples("tatsu-lab/alpaca", tokenizer, seq_len=32, val_fraction=0.0)


def test_split_is_stable_and_disjoint(tiny_corpus, tokenizer):
    examples, stats = read_examples(tiny_corpus[1], tokenizer, seq_len=64, val_fraction=0.2)
    assert (
        stats.examples["train"] + stats.examples["val"] == stats.records
        and 0 < stats.examples["val"] < stats.examples["train"]
    )
    assert not {tuple(e.inputs) for e in examples["train"]} & {tuple(e.inputs) for e in examples["val"]}
    assert read_examples(tiny_corpus[1], tokenizer, seq_len=64, val_fraction=0.2)[0] == examples


def test_loader_gives_each_rank_its_own_samples(tiny_corpus, tokenizer):
    examples, _ = read_examples(tiny_corpus[1], tokenizer, seq_len=64, val_fraction=0.0)
    data = SFTDataset(examples["train"], seq_len=64, pad=ChatTokens.of(tokenizer, "tok").pad)
    single = next(iter(SFTLoader(data, batch_size=4, seed=3)))[0]
    ranks = [next(iter(SFTLoader(data, batch_size=2, rank=r, world_size=2, seed=3)))[0] for r in (0, 1)]
    assert sorted(map(tuple, single.tolist())) == sorted(map(tuple, ranks[0].tolist() + ranks[1].tolist()))


def test_packing_puts_every_example_once_into_fewer_rows_with_document_starts(tiny_corpus, tokenizer):
    examples = read_examples(tiny_corpus[1], tokenizer, seq_len=64, val_fraction=0.0)[0]["train"]
    pad = ChatTokens.of(tokenizer, "tok").pad
    packed = SFTDataset(examples, seq_len=64, pad=pad, packing=True, seed=1)
    assert len(packed) < len(examples) / 3
    found = []
    for inputs, targets, starts in zip(packed.inputs.tolist(), packed.targets.tolist(), packed.doc_starts):
        used = len(inputs)
        while inputs[used - 1] == pad and targets[used - 1] == IGNORE_INDEX:
            used -= 1
        bounds = [*starts.tolist(), used]
        found += [(inputs[s:e], targets[s:e]) for s, e in zip(bounds, bounds[1:])]
    assert sorted(found) == sorted((e.inputs, e.targets) for e in examples)
    assert torch.equal(SFTDataset(examples, seq_len=64, pad=pad, packing=True, seed=1).inputs, packed.inputs)
    batch = next(iter(SFTLoader(packed, batch_size=2, seed=0)))
    assert len(batch) == 3 and all(starts[0] == 0 for starts in batch[2])


def test_a_packed_example_gets_the_logits_it_gets_alone(tokenizer):
    """The document mask hides the other examples; RoPE scores depend on token distances only, so the
    example's absolute offset in the row changes nothing beyond float rounding."""
    chat = ChatTokens.of(tokenizer, "tok")
    examples = [encode_example(tokenizer, chat, turns(p, r), seq_len=64) for p, r in PAIRS]
    args = ModelConfig(size="tiny", seq_len=64).args(vocab_size=tokenizer.get_vocab_size())
    torch.manual_seed(0)
    model = build_model(args)
    model.to_empty(device="cpu")
    model.init_weights()
    packed = SFTDataset(examples, seq_len=64, pad=chat.pad, packing=True, seed=0)
    assert len(packed) == 1 and len(packed.doc_starts[0]) == 3
    with torch.no_grad():
        logits = model(packed.inputs, doc_starts=packed.doc_starts)[0]
        for start in packed.doc_starts[0].tolist():
            example = next(
                e for e in examples if packed.inputs[0, start : start + len(e.inputs)].tolist() == e.inputs
            )
            alone = model(torch.tensor([example.inputs]))[0]
            torch.testing.assert_close(
                logits[start : start + len(example.inputs)], alone, atol=1e-4, rtol=1e-4
            )
