"""The token loader over random shards: windows, order, resume, prefetch, document starts, validation."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from data_prep.tokenizer.manifest import load_manifest
from pipeline.model.loss import IGNORE_INDEX
from pipeline.testing import write_random_shards
from pipeline.train.data import TokenLoader, ValidationSet, unigram_perplexity
from pipeline.train.mixture import SourceSpec
from pipeline.train.windows import TokenWindows

VOCAB = 300
TRAIN_DOCS = [37, 5, 80, 13, 64, 21, 9, 50]  # cc gets the first 4 (135 tokens), wiki the rest (144)
VAL_DOCS = [30, 41, 12, 25]


@pytest.fixture
def data(tmp_path):
    parts = write_random_shards(tmp_path, {"train": TRAIN_DOCS, "val": VAL_DOCS}, vocab_size=VOCAB)
    streams = {
        split: np.concatenate([parts[(split, "cc")][0], parts[(split, "wiki")][0]])
        for split in ("train", "val")
    }
    return tmp_path, streams


def take(loader, n):
    iterator = iter(loader)
    return [next(iterator) for _ in range(n)]


def rows_of(batches):
    return [tuple(row.tolist()) for inputs, *_ in batches for row in inputs]


def test_windows_cover_the_stream_across_shards(data):
    root, streams = data
    windows = TokenWindows(root, "train", seq_len=16)
    assert len(windows.chunks) > 3
    assert windows.num_tokens == len(streams["train"]) == 279
    assert windows.num_windows == (279 - 1) // 16 == 17
    for i in range(windows.num_windows):
        window = windows.window(i)
        assert window.dtype == np.int64 and window.shape == (17,)
        np.testing.assert_array_equal(window, streams["train"][i * 16 : i * 16 + 17])
    with pytest.raises(IndexError):
        windows.window(17)


def test_source_filter_keeps_only_that_sources_stream(data):
    root, _ = data
    parts = write_random_shards(root / "again", {"train": TRAIN_DOCS}, vocab_size=VOCAB)
    wiki = TokenWindows(root / "again", "train", seq_len=8, source="wiki")
    assert wiki.num_tokens == 144 and {e["source"] for e in wiki.entries} == {"wiki"}
    np.testing.assert_array_equal(wiki.window(3), parts[("train", "wiki")][0][24:33])


def test_chunks_are_zero_copy_views_of_the_mapped_files(data):
    root, _ = data
    allocated = pa.total_allocated_bytes()
    windows = TokenWindows(root, "train", seq_len=16)
    assert pa.total_allocated_bytes() == allocated
    regions = []
    with open("/proc/self/maps") as maps:
        lines = maps.readlines()
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and fields[5].startswith(str(root / "shards")):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            regions.append((start, end))
    for array in windows.chunks + windows.offsets:
        assert not array.flags.writeable
        address = array.ctypes.data
        assert any(start <= address and address + array.nbytes <= end for start, end in regions)


def test_empty_or_short_split_names_the_dir_and_split(data):
    root, _ = data
    with pytest.raises(ValueError, match=f"no 'test' tokens in {root}"):
        TokenWindows(root, "test", seq_len=16)
    with pytest.raises(ValueError, match=f"the 'val' split of {root} has 108 tokens"):
        TokenWindows(root, "val", seq_len=200)
    with pytest.raises(ValueError, match=r"source cc \(.*, source 'nope'\): no 'train' source 'nope' tokens"):
        TokenLoader(sources=[SourceSpec("cc", str(root), "nope")], seq_len=8, batch_size=1)


def test_batches_are_windows_with_shifted_targets_in_one_buffer(data):
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=4, seed=3, prefetch=0)
    windows = TokenWindows(root, "train", seq_len=16)
    permutation = np.random.default_rng((3, 0)).permutation(windows.num_windows)
    inputs, targets = take(loader, 1)[0]
    assert inputs.shape == targets.shape == (4, 16) and inputs.dtype == targets.dtype == torch.int64
    assert targets.data_ptr() == inputs.data_ptr() + inputs.element_size()  # two views, one copy
    for row, w in enumerate(permutation[:4]):
        np.testing.assert_array_equal(inputs[row].numpy(), windows.window(w)[:-1])
        np.testing.assert_array_equal(targets[row].numpy(), windows.window(w)[1:])


def test_each_epoch_is_a_fresh_permutation_of_all_windows(data):
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=1)  # 17 windows
    seen = rows_of(take(loader, 34))
    windows = TokenWindows(root, "train", seq_len=16)
    everything = sorted(tuple(windows.window(i)[:-1].tolist()) for i in range(17))
    assert sorted(seen[:17]) == sorted(seen[17:]) == everything
    assert seen[:17] != seen[17:]
    state = loader.state_dict()
    assert loader.epoch == 2 and (state["seed"], state["epoch"], state["sample_index"]) == (0, 2, 34)
    assert state["source_epochs"] == {"all": 2}


def test_unique_windows_repeat_one_seeded_subset_every_epoch(data):
    """``data.unique_tokens``: 5 of the 17 windows, drawn 4 times over in 20 samples, each pass all 5."""
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=1, seed=3, unique_windows=5)
    seen = rows_of(take(loader, 20))
    passes = [sorted(seen[i : i + 5]) for i in range(0, 20, 5)]
    assert all(p == passes[0] for p in passes) and len(set(seen)) == 5
    windows = TokenWindows(root, "train", seq_len=16)
    everything = {tuple(windows.window(i)[:-1].tolist()) for i in range(17)}
    assert set(seen) <= everything
    assert loader.state_dict()["source_epochs"] == {"all": 4}
    halves = [
        take(TokenLoader(root, seq_len=16, batch_size=1, seed=3, unique_windows=5, rank=r, world_size=2), 10)
        for r in range(2)
    ]
    assert set(rows_of(halves[0] + halves[1])) == set(seen)  # the subset depends on the seed, not the ranks
    other = TokenLoader(root, seq_len=16, batch_size=1, seed=4, unique_windows=5)
    assert set(rows_of(take(other, 5))) != set(seen)
    assert loader.fingerprint != TokenLoader(root, seq_len=16, batch_size=1, seed=3).fingerprint


def test_unique_windows_are_shared_over_a_mixture_by_weight(data):
    root, _ = data
    sources = [
        SourceSpec(name="cc", shards=str(root), source="cc", weight=3.0),
        SourceSpec(name="wiki", shards=str(root), source="wiki", weight=1.0),
    ]
    loader = TokenLoader(sources=sources, seq_len=8, batch_size=1, unique_windows=8)
    assert [w.num_windows for w in loader.windows] == [6, 2]


def test_two_ranks_split_the_one_rank_sequence(data):
    root, _ = data
    single = take(TokenLoader(root, seq_len=16, batch_size=4, seed=7), 6)  # crosses an epoch boundary
    ranks = [
        take(TokenLoader(root, seq_len=16, batch_size=2, seed=7, rank=r, world_size=2), 6) for r in range(2)
    ]
    for step, (inputs, targets) in enumerate(single):
        assert torch.equal(ranks[0][step][0], inputs[0::2]) and torch.equal(ranks[1][step][0], inputs[1::2])
        assert torch.equal(ranks[0][step][1], targets[0::2]) and torch.equal(ranks[1][step][1], targets[1::2])


@pytest.mark.parametrize("prefetch", [0, 3])
def test_resume_continues_exactly(data, prefetch):
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=3, seed=1, prefetch=prefetch)
    iterator = iter(loader)
    for _ in range(7):
        next(iterator)
    state = loader.state_dict()  # with prefetch, later batches are already built: they must not count
    expected = [next(iterator) for _ in range(4)]
    resumed = TokenLoader(root, seq_len=16, batch_size=3, seed=99, prefetch=0)
    resumed.load_state_dict(state)
    assert resumed.seed == 1 and resumed.epoch == state["epoch"] == 1 and state["sample_index"] == 21
    for (x, y), (ex, ey) in zip(take(resumed, 4), expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_prefetch_yields_the_same_batches_and_follows_a_loaded_state(data):
    root, _ = data
    plain = take(TokenLoader(root, seq_len=8, batch_size=3, seed=2, prefetch=0), 12)
    loader = TokenLoader(root, seq_len=8, batch_size=3, seed=2, prefetch=2)
    iterator = iter(loader)
    for step in range(5):
        assert torch.equal(next(iterator)[0], plain[step][0])
    loader.load_state_dict(
        {**loader.state_dict(), "sample_index": 27, "epoch": loader.source_epochs(27)["all"]}
    )
    assert torch.equal(next(iterator)[0], plain[9][0])  # the live iterator jumps to the loaded state
    assert loader.sample_index == 30


def test_prefetch_thread_errors_reach_the_consumer(data):
    root, _ = data
    loader = TokenLoader(root, seq_len=8, batch_size=2, prefetch=2)
    loader.windows[0].chunks = []  # every batch now fails to build
    with pytest.raises(IndexError):
        next(iter(loader))


def test_resume_at_another_world_size_continues_the_global_sequence(data):
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=4, seed=5)
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = loader.state_dict()
    expected = [next(iterator) for _ in range(5)]
    ranks = []
    for rank in range(2):
        resumed = TokenLoader(root, seq_len=16, batch_size=2, seed=5, rank=rank, world_size=2)
        resumed.load_state_dict(state)
        ranks.append(take(resumed, 5))
    for step, (inputs, _) in enumerate(expected):
        assert torch.equal(ranks[0][step][0], inputs[0::2]) and torch.equal(ranks[1][step][0], inputs[1::2])


def test_state_from_other_data_is_refused(data):
    root, _ = data
    loader = TokenLoader(root, seq_len=16, batch_size=1)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="does not fit the 17 windows"):
        loader.load_state_dict(
            {"seed": 0, "epoch": 0, "sample_index": 40}
        )  # an old state, without fingerprint
    other_seq_len = TokenLoader(root, seq_len=8, batch_size=1)
    with pytest.raises(ValueError, match=f"saved for other data .*give {other_seq_len.fingerprint}"):
        other_seq_len.load_state_dict(state)
    mixture = TokenLoader(
        sources=[SourceSpec("cc", str(root), "cc"), SourceSpec("wiki", str(root), "wiki")],
        seq_len=16,
        batch_size=1,
    )
    reweighted = TokenLoader(
        sources=[SourceSpec("cc", str(root), "cc", 2.0), SourceSpec("wiki", str(root), "wiki")],
        seq_len=16,
        batch_size=1,
    )
    with pytest.raises(ValueError, match="saved for other data"):
        reweighted.load_state_dict(mixture.state_dict())


def test_a_single_source_spec_gives_the_plain_order(data):
    root, _ = data
    plain = take(TokenLoader(root, seq_len=8, batch_size=5, seed=4), 8)
    spec = take(TokenLoader(sources=[SourceSpec("all", str(root))], seq_len=8, batch_size=5, seed=4), 8)
    assert rows_of(plain) == rows_of(spec)


def mixture(root, *, weights=(3.0, 1.0), **kwargs):
    return TokenLoader(
        sources=[
            SourceSpec("cc", str(root), "cc", weights[0]),
            SourceSpec("wiki", str(root), "wiki", weights[1]),
        ],
        seq_len=8,
        **kwargs,
    )


def test_mixture_draws_by_weight_and_repeats_the_small_source(tmp_path):
    write_random_shards(
        tmp_path, {"train": [400] * 4 + [40] * 4}, vocab_size=VOCAB
    )  # cc 1600, wiki 160 tokens
    loader = mixture(tmp_path, weights=(1.0, 1.0), batch_size=10, block_size=20, seed=0)
    cc, wiki = (TokenWindows(tmp_path, "train", 8, source=s) for s in ("cc", "wiki"))
    assert (cc.num_windows, wiki.num_windows) == (199, 19)
    rows = rows_of(take(loader, 8))  # 80 samples: 40 of each, wiki passes 40 / 19 times
    of_wiki = {tuple(wiki.window(i)[:-1].tolist()) for i in range(19)}
    drawn_wiki = [row for row in rows if row in of_wiki]
    assert len(drawn_wiki) == 40
    assert all(
        sum(row in of_wiki for row in rows[b : b + 20]) == 10 for b in range(0, 80, 20)
    )  # exact per block
    assert sorted(drawn_wiki[:19]) == sorted(of_wiki) and sorted(drawn_wiki[19:38]) == sorted(of_wiki)
    assert len(set(rows) - of_wiki) == 40  # cc: no repeats
    report = loader.mixture_report()
    assert report["wiki"] == {
        "samples": 40,
        "tokens": 320,
        "windows": 19,
        "weight": 1.0,
        "epochs": 40 / 19,
        "repeats": 2,
    }
    assert report["cc"]["samples"] == 40 and report["cc"]["repeats"] == 0
    assert loader.state_dict()["source_epochs"] == {"cc": 0, "wiki": 2} and loader.epoch == 2
    assert loader.mixture_report(30)["wiki"]["samples"] == sum(row in of_wiki for row in rows[:30])


def test_mixture_order_is_seeded_and_resumes_at_another_world_size(data):
    root, _ = data
    whole = rows_of(take(mixture(root, batch_size=4, block_size=8, seed=1), 10))
    assert whole == rows_of(take(mixture(root, batch_size=4, block_size=8, seed=1), 10))
    assert whole != rows_of(take(mixture(root, batch_size=4, block_size=8, seed=2), 10))
    first = mixture(root, batch_size=1, block_size=8, seed=1, world_size=4, rank=2)
    take(first, 4)  # 16 global samples
    resumed = [mixture(root, batch_size=2, block_size=8, seed=9, world_size=2, rank=r) for r in range(2)]
    for loader in resumed:
        loader.load_state_dict(first.state_dict())
    ranks = [rows_of(take(loader, 6)) for loader in resumed]
    assert [row for pair in zip(*ranks) for row in pair] == whole[16:40]


def test_doc_starts_mark_where_documents_begin(data):
    root, _ = data
    starts = np.cumsum([0] + TRAIN_DOCS)[:-1]  # in the train stream
    windows = TokenWindows(root, "train", seq_len=16)
    for i in range(windows.num_windows):
        expected = starts[(starts >= i * 16) & (starts < i * 16 + 16)] - i * 16
        np.testing.assert_array_equal(windows.doc_starts(i), expected)
    loader = TokenLoader(root, seq_len=16, batch_size=4, seed=3, doc_starts=True)
    _, _, batch_starts = next(iter(loader))
    permutation = np.random.default_rng((3, 0)).permutation(windows.num_windows)
    for row, w in enumerate(permutation[:4]):
        np.testing.assert_array_equal(batch_starts[row], windows.doc_starts(w))


def val_windows(batches):
    """(source, input row) of every real (not padding) row."""
    return [
        (b.source, tuple(x.tolist()))
        for b in batches
        for x, y in zip(b.inputs, b.targets)
        if (y != IGNORE_INDEX).any()
    ]


def test_validation_set_is_fixed_whatever_the_world_and_batch_size(data):
    root, streams = data
    sources = [SourceSpec("cc", str(root), "cc"), SourceSpec("wiki", str(root), "wiki")]
    val = ValidationSet.from_sources(sources, seq_len=4, windows_per_source=5)
    assert {name: len(w) for name, w in val.windows.items()} == {"cc": 17, "wiki": 9}  # 71 and 37 tokens
    np.testing.assert_array_equal(val.indices["cc"], [0, 3, 6, 10, 13])
    assert val.tokens() == {"cc": 20, "wiki": 20}
    reference = val_windows(val.batches(batch_size=8))
    assert len(reference) == 10 and [s for s, _ in reference] == ["cc"] * 5 + ["wiki"] * 5
    assert reference[1][1] == tuple(streams["val"][12:16].tolist())
    for world_size in (2, 3, 4):
        for batch_size in (1, 2):
            ranks = [
                list(val.batches(batch_size=batch_size, rank=r, world_size=world_size))
                for r in range(world_size)
            ]
            assert (
                len({tuple((b.source, b.inputs.shape) for b in rank) for rank in ranks}) == 1
            )  # matched shapes
            union = [w for rank in ranks for w in val_windows(rank)]
            assert sorted(union) == sorted(reference)  # each window exactly once
            padded = [b for rank in ranks for b in rank if (b.targets == IGNORE_INDEX).any()]
            assert all((b.inputs[(b.targets == IGNORE_INDEX).all(1)] == 0).all() for b in padded)


def test_seen_subset_is_the_first_samples_of_the_order_whatever_the_world_and_batch_size(data):
    """data.train_eval_windows' set: the windows of global samples [0, n) as trained on, each source's under
    its name; the same from any rank's loader, and dealt to any world size with each window once."""
    root, _ = data
    n = 37  # at 3:1 cc takes about 28 of its 16 windows: its second epoch is in the subset
    trained = rows_of(take(mixture(root, batch_size=4, block_size=8, seed=1), 10))[:n]
    single = mixture(root, batch_size=4, block_size=8, seed=1).seen_subset(n)
    other = mixture(root, batch_size=3, block_size=8, seed=1, world_size=2, rank=1).seen_subset(n)
    reference = val_windows(single.batches(batch_size=64))
    assert sorted(row for _, row in reference) == sorted(trained)
    drawn = mixture(root, batch_size=1, block_size=8, seed=1).mixture_report(n)
    assert {s: [source for source, _ in reference].count(s) for s in ("cc", "wiki")} == {
        name: entry["samples"] for name, entry in drawn.items()
    }
    assert drawn["cc"]["samples"] > 16  # cc repeats inside the subset
    assert val_windows(other.batches(batch_size=64)) == reference
    ranks = [list(single.batches(batch_size=2, rank=r, world_size=3)) for r in range(3)]
    assert sorted(w for rank in ranks for w in val_windows(rank)) == sorted(reference)
    reseeded = mixture(root, batch_size=4, block_size=8, seed=2).seen_subset(n)
    assert val_windows(reseeded.batches(batch_size=64)) != reference


def test_unigram_perplexity_matches_numpy(data):
    root, streams = data
    counts = np.bincount(streams["train"], minlength=VOCAB)
    probs = (counts + 1) / (counts.sum() + VOCAB)
    expected = np.exp(-np.mean(np.log(probs[streams["val"]])))
    assert unigram_perplexity(root) == pytest.approx(expected, rel=1e-12)


def test_load_manifest_is_reexported(data):
    root, _ = data
    assert load_manifest(root)["tokenizer"]["vocab_size"] == VOCAB
