"""Host names, rendezvous endpoints, hostfiles and Slurm node lists, checked before use.

A host name ends up in a command line, a hostfile line or an ``#SBATCH`` directive; a space,
quote or newline in one would split or inject there. So names are checked against what DNS
(RFC 1123) and Slurm's hostlist syntax allow, and a bad one is a one-line error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipeline.core.errors import InputError

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_NODELIST = re.compile(r"[A-Za-z0-9._\-\[\],]+")
"""Slurm hostlist expressions: ``gpu[001-004,007],login1``."""


def check_hostname(host: str) -> str:
    """``host`` unchanged when it is a DNS name or IPv4 address (or a bracketed IPv6 one)."""
    if len(host) > 253 or not (_HOSTNAME.fullmatch(host) or _IPV6.fullmatch(host)):
        raise InputError(f"invalid host name {host!r}: use letters, digits, '-' and '.' only")
    return host


def check_nodelist(nodelist: str) -> str:
    """``nodelist`` unchanged when it is a Slurm hostlist expression (``gpu[01-04],cpu7``)."""
    if not _NODELIST.fullmatch(nodelist) or nodelist.count("[") != nodelist.count("]"):
        raise InputError(
            f"invalid Slurm node list {nodelist!r}: use host names, '[a-b]' ranges and commas only"
        )
    return nodelist


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` -> ``("host", port)``, both checked."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"invalid rendezvous endpoint {endpoint!r}: expected HOST:PORT, e.g. node01:29500")
    return check_hostname(host), int(port)


def render_hostfile(hosts: Sequence[str], slots: int) -> str:
    """The MPI-style hostfile DeepSpeed's launcher reads: one ``host slots=G`` line per host."""
    if slots < 1:
        raise InputError(f"slots per host must be >= 1, got {slots}")
    if not hosts:
        raise InputError("a hostfile needs at least one host")
    duplicates = sorted({host for host in hosts if list(hosts).count(host) > 1})
    if duplicates:
        raise InputError(f"host listed twice in the hostfile: {', '.join(duplicates)}")
    return "".join(f"{check_hostname(host)} slots={slots}\n" for host in hosts)
