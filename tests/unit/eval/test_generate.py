"""Generation with the KV cache: equal to recomputing the whole context, batch = singles, sampling, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.cli.main import main
from pipeline.config.eval import GenerateJobConfig
from pipeline.eval.generate import complete, cut_at_stop, prompt_tokens
from pipeline.finetune.data import ChatTokens, render
from pipeline.model.generation import outside_nucleus, sample_next
from pipeline.train.checkpoint import load_model_for_inference

PROMPTS = ["Branford", "The history of the", "In 1850 a small town in the north was"]


@pytest.fixture(scope="module")
def loaded(pretrained: Path):
    model, args, tokenizer = load_model_for_inference(pretrained)
    return model, tokenizer, ChatTokens.of(tokenizer, pretrained)


def recompute_greedy(model, tokens: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """The reference: argmax over a full forward of the (cropped) context at every step, no cache."""
    for _ in range(max_new_tokens):
        logits = model(tokens[:, -model.args.seq_len :])[:, -1]
        tokens = torch.cat([tokens, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return tokens


def left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    tokens = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    valid = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    return tokens, valid


def test_cached_greedy_equals_recomputing_the_context(loaded):
    model, tokenizer, _ = loaded
    prompt = torch.tensor([tokenizer.encode(PROMPTS[2], add_special_tokens=False).ids])
    for new in (20, model.args.seq_len):  # within the window, and past it (the window slides)
        cached = model.generate(prompt, new, temperature=0)
        assert torch.equal(cached, recompute_greedy(model, prompt, new)), new


def test_a_batch_generates_what_each_prompt_does_alone(loaded):
    model, tokenizer, special = loaded
    rows = [tokenizer.encode(p, add_special_tokens=False).ids for p in PROMPTS]
    tokens, valid = left_padded(rows, special.eos)
    batch = model.generate(tokens, 16, temperature=0, valid=valid)
    for i, row in enumerate(rows):
        alone = model.generate(torch.tensor([row]), 16, temperature=0)
        assert torch.equal(batch[i, tokens.shape[1] :], alone[0, len(row) :]), PROMPTS[i]


def test_top_k_1_is_greedy_and_a_seed_repeats(loaded):
    model, tokenizer, _ = loaded
    prompt = torch.tensor([tokenizer.encode(PROMPTS[1], add_special_tokens=False).ids])
    top1 = model.generate(prompt, 12, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(top1, model.generate(prompt, 12, temperature=0))
    draws = [
        model.generate(prompt, 12, temperature=1.0, top_p=0.9, generator=torch.Generator().manual_seed(seed))
        for seed in (1, 1, 2)
    ]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    logits = probs.log()
    kept = {
        p: (~outside_nucleus(logits, p))[0].nonzero().flatten().tolist()
        for p in (0.3, 0.6, 0.7, 0.9, 0.97, 1.0)
    }
    assert kept == {0.3: [1], 0.6: [1, 3], 0.7: [1, 3], 0.9: [0, 1, 3], 0.97: [0, 1, 2, 3], 1.0: [0, 1, 2, 3]}
    draws = sample_next(
        logits.expand(2000, -1), temperature=1.0, top_p=0.7, generator=torch.Generator().manual_seed(0)
    )
    assert set(draws.tolist()) == {1, 3}
    assert (draws == 1).float().mean().item() == pytest.approx(
        0.5 / 0.8, abs=0.05
    )  # renormalised over the nucleus
    assert sample_next(logits, temperature=0).item() == 1 and math.isclose(probs.sum().item(), 1.0)


def test_stop_strings_end_the_completion_before_them(pretrained: Path):
    greedy = dict(checkpoint=str(pretrained), prompt=PROMPTS[0], max_new_tokens=24, temperature=0.0)
    full = complete(GenerateJobConfig(**greedy))[0]["completion"]
    stop = full[len(full) // 2 : len(full) // 2 + 2]  # two characters from the middle
    assert stop.strip(), full
    cut = complete(GenerateJobConfig(**greedy, stop=["\x00never", stop]))[0]["completion"]
    assert cut == full[: full.index(stop)]
    assert cut_at_stop("a, b. c", [".", ","]) == "a" and cut_at_stop("abc", ["x"]) == "abc"


def test_chat_mode_wraps_the_prompt_as_fine_tuning_does(loaded, pretrained: Path):
    _, tokenizer, special = loaded
    context = prompt_tokens(tokenizer, special, "Name a town.", chat=True)
    example, _ = render(
        tokenizer,
        special,
        [{"role": "user", "content": "Name a town."}, {"role": "assistant", "content": "Branford"}],
    )
    assert (
        context == example[: len(context)] and context[0] == special.user and context[-1] == special.assistant
    )
    reply = complete(
        GenerateJobConfig(
            checkpoint=str(pretrained), prompt="Name a town.", chat=True, max_new_tokens=8, temperature=0.0
        )
    )[0]["completion"]
    assert "<|assistant|>" not in reply and "<|user|>" not in reply


def test_prompts_file_in_jsonl_out_equals_one_prompt_at_a_time(pretrained: Path, tmp_path: Path, capsys):
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n\n")
    (tmp_path / "p.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS))
    )
    common = ["--checkpoint", str(pretrained), "--temperature", "0", "--max-new-tokens", "10", "batch_size=2"]
    for name in ("p.txt", "p.jsonl"):
        out = tmp_path / f"{name}.out.jsonl"
        assert main(["generate", "--prompts", str(tmp_path / name), "--output", str(out), *common]) == 0
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["prompt"] for r in records] == PROMPTS and all(
            set(r) == {"prompt", "completion"} for r in records
        )
    alone = [
        complete(GenerateJobConfig(checkpoint=str(pretrained), prompt=p, max_new_tokens=10, temperature=0.0))[
            0
        ]
        for p in PROMPTS
    ]
    assert records == alone
    capsys.readouterr()
    assert main(["generate", "--prompt", PROMPTS[0], *common]) == 0
    assert capsys.readouterr().out.strip() == (PROMPTS[0] + alone[0]["completion"]).strip()


GIVE_ONE = "prompt: give a prompt (--prompt) or a prompts file (--prompts)"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prompt", "a", "--prompts", "{file}"], f"{GIVE_ONE}, not both"),
        ([], f"{GIVE_ONE}\n"),
        (["--prompts", "{empty}"], "prompts file has no prompts"),
        (["--prompts", "{bad}"], "bad.jsonl:2: not JSON"),
        (["--prompt", "a", "--top-p", "0"], "top_p: must be in (0, 1]"),
    ],
)
def test_bad_input_is_one_clear_line(pretrained: Path, tmp_path: Path, capsys, flags, message):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    files = {"file": tmp_path / "empty.txt", "empty": tmp_path / "empty.txt", "bad": tmp_path / "bad.jsonl"}
    flags = [f.format(**files) for f in flags]
    assert main(["generate", "--checkpoint", str(pretrained), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
