"""C4 removes the lines that are not sentences, drops pages with placeholders, code or too little left."""

from __future__ import annotations

from data_prep.config import C4FilterConfig
from data_prep.document import Document
from data_prep.filters import C4Filter
from data_prep.stats import StageStats

ARTICLE = [
    "The town lies on the banks of a wide river.",
    "Most of its old houses were built from local stone long ago.",
    "Every summer the people hold a festival with music and food!",
    "Is it the oldest market town in the whole region of the north?",
]


def run(step: C4Filter, *docs: Document) -> list[Document]:
    return list(step.run(docs))


def test_c4_removes_non_sentence_lines_and_counts_them():
    step = C4Filter(C4FilterConfig(enabled=True))
    text = "\n".join(
        [
            "Home | News | Contact",
            ARTICLE[0],
            "Read more",
            "Please enable JavaScript in your browser to see this page.",
            ARTICLE[1],
            "This site uses cookies to improve your experience, see our policy.",
            "Too short.",
            ARTICLE[2],
            "And then the story goes on and on...",
            ARTICLE[3],
        ]
    )
    [kept] = run(step, Document("a", text, "cc"))
    assert kept.text == "\n".join(ARTICLE)
    assert step.stats.counts == {
        "lines_removed/no_terminal_punctuation": 3,
        "lines_removed/javascript": 1,
        "lines_removed/policy": 1,
        "lines_removed/too_few_words": 1,
    }
    assert (step.stats.kept, step.stats.bytes) == (1, len(kept.text.encode()))


def test_c4_drops_pages_with_placeholders_code_or_too_few_sentences():
    step = C4Filter(C4FilterConfig(enabled=True))
    docs = [
        Document("lorem", "\n".join(ARTICLE + ["Lorem ipsum dolor sit amet, consectetur adipiscing."]), "cc"),
        Document("code", "\n".join(ARTICLE + ["Write if (x) { return x; } to return the value of x."]), "cc"),
        Document("stub", "\n".join(ARTICLE[:2] + ["Menu", "Login"]), "cc"),
    ]
    assert run(step, *docs) == []
    assert step.stats.dropped == {"lorem_ipsum": 1, "curly_bracket": 1, "too_few_sentences": 1}


def test_c4_thresholds_and_sources_follow_the_config():
    short_lines = "\n".join(["It rains a lot.", "The sun is out.", "We like it here."])
    assert run(C4Filter(C4FilterConfig(enabled=True)), Document("a", short_lines, "cc")) == []
    loose = C4Filter(C4FilterConfig(enabled=True, min_words_per_line=3))
    assert [d.text for d in run(loose, Document("a", short_lines, "cc"))] == [short_lines]
    wiki = Document("w", "History\nA short stub", "wiki")
    assert (
        run(C4Filter(C4FilterConfig(enabled=True)), wiki) == [wiki] and wiki.text == "History\nA short stub"
    )


def test_stage_counts_survive_merge_and_round_trip():
    a, b = StageStats(), StageStats()
    a.count("lines_removed/policy", 2)
    b.count("lines_removed/policy")
    b.count("emails", 3)
    a.merge(b)
    assert a.counts == {"lines_removed/policy": 3, "emails": 3}
    assert StageStats.from_dict(a.to_dict()) == a
    old = a.to_dict()
    del old["counts"]  # completions/ markers written before counts existed still load
    assert StageStats.from_dict(old).counts == {}
