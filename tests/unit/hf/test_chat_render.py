"""One chat rendering everywhere: ``generate --chat`` (a system message, conversation histories) and the
exported Hugging Face ``chat_template`` give exactly the ids ``sft_data`` trains on, for a tokenizer
with and without ``<|system|>``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from pipeline.cli.main import main
from pipeline.config.eval import GenerateJobConfig
from pipeline.config.finetune import FinetuneJobConfig
from pipeline.config.model import ModelConfig
from pipeline.config.train import LoopConfig
from pipeline.core.files import TOKENIZER_FILE
from pipeline.eval.generate import complete, prompt_tokens, read_prompts
from pipeline.finetune.data import SYSTEM, ChatTokens, render
from pipeline.hf.export import export_hf
from pipeline.model.transformer import build_model
from pipeline.parallel.dist import DistInfo
from pipeline.parallel.registry import parallelize
from pipeline.testing import require_module
from pipeline.train.checkpoint import load_model_for_inference, load_tokenizer, save_checkpoint

SYSTEM_TEXT = "Answer briefly.\nName the river."


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


CONVERSATIONS = [  # each ends with an assistant turn; edge cases in the text: newlines, spaces, non-ASCII
    [
        {"role": "system", "content": SYSTEM_TEXT},
        user("Which river is Branford on?"),
        assistant("The river Lorn."),
    ],
    [
        {"role": "system", "content": SYSTEM_TEXT},
        user("Which river is Branford on?"),
        assistant("The river Lorn."),
        user("  And Ashby,\n\nthe naïve café town? "),
        assistant(" The river Tane.\n"),
    ],
    [
        user("Where is Stavwick?"),
        assistant("In the north."),
        user("What is it known for?"),
        assistant("Its wool."),
    ],
    [{"role": "system", "content": ""}, user("Hi"), assistant("Hello.")],
]


@pytest.fixture(scope="module", params=["folded", "system_token"])
def finetuned(request, tiny_corpus, tmp_path_factory) -> Path:
    """A fine-tune's checkpoint whose tokenizer lacks (``folded``) or has ``<|system|>``. Its weights are
    random: what is checked is the ids the model is given, and what it makes of them."""
    root = tmp_path_factory.mktemp(request.param)
    tokenizer_file = tiny_corpus[0] / TOKENIZER_FILE
    tokenizer = load_tokenizer(tokenizer_file)
    if request.param == "system_token":
        tokenizer.add_special_tokens([SYSTEM])
        tokenizer_file = root / TOKENIZER_FILE
        tokenizer.save(str(tokenizer_file))
    assert (tokenizer.token_to_id(SYSTEM) is not None) == (request.param == "system_token")
    args = ModelConfig(size="tiny", seq_len=64).args(vocab_size=tokenizer.get_vocab_size())
    torch.manual_seed(0)
    parallel = parallelize(
        build_model(args), strategy="ddp", dist=DistInfo(), loop=LoopConfig(), total_steps=1
    )
    return save_checkpoint(
        root / "sft",
        parallel=parallel,
        dist=DistInfo(),
        step=1,
        tokens_seen=0,
        config=FinetuneJobConfig(init_from="runs/base"),
        model_args=args,
        tokenizer_file=tokenizer_file,
        loader_state={},
        mlflow_run_id=None,
        seed=0,
        keep=1,
    )


@pytest.fixture(scope="module")
def tokenizer(finetuned) -> Tokenizer:
    return load_tokenizer(finetuned / TOKENIZER_FILE)


@pytest.fixture(scope="module")
def chat(tokenizer, finetuned) -> ChatTokens:
    return ChatTokens.of(tokenizer, finetuned)


def asking_for_the_last_reply(
    tokenizer: Tokenizer, chat: ChatTokens, conversation: list[dict[str, str]]
) -> list[int]:
    """The ids a training example holds before its last reply: the example, less that reply and its EOS."""
    tokens, _ = render(tokenizer, chat, conversation)
    reply = tokenizer.encode(conversation[-1]["content"], add_special_tokens=False).ids
    assert tokens[-len(reply) - 2 :] == [chat.assistant, *reply, chat.eos]
    return tokens[: -len(reply) - 1]


def greedy_reply(checkpoint: Path, context: list[int], max_new_tokens: int) -> str:
    model, _, tokenizer = load_model_for_inference(checkpoint)
    eos = ChatTokens.of(tokenizer, checkpoint).eos
    new = model.generate(torch.tensor([context]), max_new_tokens, temperature=0, eos_id=eos)[
        0, len(context) :
    ].tolist()
    return tokenizer.decode(new[: new.index(eos)] if eos in new else new)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_generate_chat_context_is_the_fine_tuning_render(tokenizer, chat, conversation):
    want = asking_for_the_last_reply(tokenizer, chat, conversation)
    history = conversation[:-1]
    assert prompt_tokens(tokenizer, chat, history, chat=True) == want
    if (
        history[0]["role"] == "system" and history[0]["content"] and len(history) == 2
    ):  # as --system and --prompt
        assert (
            prompt_tokens(tokenizer, chat, history[1]["content"], chat=True, system=history[0]["content"])
            == want
        )
    own_system = [{"role": "system", "content": "Be terse."}, *history[-1:]]
    assert prompt_tokens(
        tokenizer, chat, own_system, chat=True, system=SYSTEM_TEXT
    ) == asking_for_the_last_reply(
        tokenizer, chat, [*own_system, assistant("x")]
    )  # its own system message wins


def test_generate_chat_with_system_and_histories_end_to_end(finetuned, tokenizer, chat, tmp_path):
    question = "Which river is Branford on?"
    history = CONVERSATIONS[2][:-1]
    sharegpt = [
        {"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]} for m in history
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [{"prompt": question}, {"messages": history}, {"conversations": sharegpt}]
        )
    )
    assert read_prompts(prompts, chat=True) == [question, history, history]
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(finetuned),
                "--prompts",
                str(prompts),
                "--chat",
                "--system",
                SYSTEM_TEXT,
                "--temperature",
                "0",
                "--max-new-tokens",
                "6",
                "--output",
                str(out),
                "batch_size=1",
            ]
        )
        == 0
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    with_system = [{"role": "system", "content": SYSTEM_TEXT}, *history]
    assert records[0].keys() == {"prompt", "system", "completion"} and records[0]["system"] == SYSTEM_TEXT
    assert records[1] == records[2] and records[1]["messages"] == with_system

    contexts = [
        asking_for_the_last_reply(
            tokenizer, chat, [{"role": "system", "content": SYSTEM_TEXT}, user(question), assistant("x")]
        ),
        asking_for_the_last_reply(tokenizer, chat, [*with_system, assistant("x")]),
    ]
    replies = [greedy_reply(finetuned, context, 6) for context in contexts]
    assert [r["completion"] for r in records] == [replies[0], replies[1], replies[1]]
    without_system = complete(
        GenerateJobConfig(
            checkpoint=str(finetuned), prompt=question, chat=True, max_new_tokens=6, temperature=0.0
        )
    )[0]
    assert without_system.keys() == {"prompt", "completion"}
    assert without_system["completion"] == greedy_reply(
        finetuned, [chat.user, *tokenizer.encode(question, add_special_tokens=False).ids, chat.assistant], 6
    )


@pytest.mark.parametrize(
    ("flags", "line", "message"),
    [
        (["--prompt", "a", "--system", "s"], None, "system: a system message needs chat mode (--chat)"),
        (
            ["--prompts", "{file}"],
            {"messages": [user("a")]},
            "p.jsonl:1: no string 'prompt' field (a conversation needs --chat)",
        ),
        (
            ["--prompts", "{file}", "--chat"],
            {"messages": [user("a"), assistant("b")]},
            "p.jsonl:1: no string 'prompt', and not a conversation ending in a user turn "
            "(the last turn is assistant, not user)",
        ),
        (
            ["--prompts", "{file}", "--chat"],
            {"conversations": [{"from": "bot", "value": "a"}]},
            "has role 'bot'",
        ),
    ],
)
def test_bad_chat_input_is_one_clear_line(finetuned, tmp_path, capsys, flags, line, message):
    (tmp_path / "p.jsonl").write_text(json.dumps(line) + "\n")
    flags = [f.format(file=tmp_path / "p.jsonl") for f in flags]
    assert main(["generate", "--checkpoint", str(finetuned), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def exported(finetuned, tmp_path_factory):
    """``AutoTokenizer`` of the checkpoint exported with ``export hf``, loaded offline."""
    transformers = require_module("transformers")
    out = export_hf(finetuned, tmp_path_factory.mktemp("hf") / "model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return transformers.AutoTokenizer.from_pretrained(out)


def hf_ids(hf_tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> list[int]:
    encoded = hf_tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(encoded["input_ids"])


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_exported_chat_template_gives_the_fine_tuning_ids(exported, tokenizer, chat, conversation):
    whole = hf_ids(exported, conversation)
    assert whole == render(tokenizer, chat, conversation)[0]
    assert whole[0] == (
        chat.system if conversation[0]["role"] == "system" and chat.system is not None else chat.user
    )
    history = conversation[:-1]
    assert (
        hf_ids(exported, history, add_generation_prompt=True)
        == asking_for_the_last_reply(tokenizer, chat, conversation)
        == prompt_tokens(tokenizer, chat, history, chat=True)
    )
    assert hf_ids(exported, history) == render(tokenizer, chat, history)[0]


def test_exported_chat_template_refuses_what_fine_tuning_never_saw(exported):
    for messages in (
        [user("a"), {"role": "system", "content": "s"}],
        [assistant("a")],
        [user("a"), user("b")],
        [{"role": "tool", "content": "t"}],
    ):
        with pytest.raises(Exception, match="user and assistant turns alternating"):
            hf_ids(exported, messages)
