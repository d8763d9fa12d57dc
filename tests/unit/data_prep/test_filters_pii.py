"""PII redaction rewrites e-mails and IPv4 addresses, counts them, and never drops a document."""

from __future__ import annotations

import pytest

from data_prep.config import PiiConfig
from data_prep.document import Document
from data_prep.filters import PiiRedactor


def redact(text: str, cfg: PiiConfig | None = None) -> tuple[str, dict[str, int]]:
    step = PiiRedactor(cfg or PiiConfig())
    [doc] = step.run([Document("d", text, "cc")])
    return doc.text, step.stats.counts


def test_redacts_emails_and_ips_and_counts_them():
    text, counts = redact(
        "Write to jane.doe+news@mail.example.co.uk or ops@example.org. "
        "The server at 192.168.0.1, and 8.8.8.8: both answer; 255.255.255.255 too. Ask 10.1.2.3."
    )
    assert (
        text == "Write to <EMAIL> or <EMAIL>. The server at <IP>, and <IP>: both answer; <IP> too. Ask <IP>."
    )
    assert counts == {"emails": 2, "ips": 4}


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3 is out",
        "see 1.2.3.4.5 in the table",
        "999.1.1.1",
        "1.2.3.256",
        "build v1.2.3.4",
        "release 2.10.0.1a",
        "user@localhost",
        "an @ sign alone",
    ],
)
def test_leaves_versions_and_non_addresses_alone(text):
    assert redact(text) == (text, {})


def test_replacements_come_from_the_config_and_nothing_is_dropped():
    step = PiiRedactor(PiiConfig(email_replacement="[email]", ip_replacement="[ip]"))
    docs = list(step.run([Document("a", "mail a@b.com from 10.0.0.1", "cc"), Document("b", "", "cc")]))
    assert [d.text for d in docs] == ["mail [email] from [ip]", ""]
    assert (step.stats.kept, step.stats.dropped) == (2, {})
