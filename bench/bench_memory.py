"""Memory while streaming a large input through ``lmpipe data prep``: flat, not growing with the file.

Issue 4's memory check. One input file of ``--size-mb`` (default 1024 MB) is built from the real
fixtures: the Common Crawl WARCs concatenated over and over (each WARC record is its own gzip
member, so the result is one valid ``.warc.gz``), or, with ``--format wiki``, the ns-0 pages of the
shortened enwiki dump repeated under new titles in one uncompressed ``.xml``. The same command runs
on a 1/16 slice of that size first (the baseline: big enough for every buffer to reach its
steady size) and then on the whole file; a sampler reads the
RSS of the ``lmpipe`` process and its children from /proc every 0.1 s. Reported: peak and median
RSS of each run and peak(big) / peak(baseline); target <= 2.

Run: ``python bench/bench_memory.py [--size-mb 1024] [--format warc|wiki]``.
"""

from __future__ import annotations

import argparse
import bz2
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
LMPIPE = str(Path(sys.executable).with_name("lmpipe"))
TARGET = 2.0


def build_warc(dest: Path, size: int) -> int:
    """Concatenate the fixture WARCs until ``size`` bytes; returns the copies of the set written."""
    sources = [
        p.read_bytes()
        for p in sorted((FIXTURES / "warc").glob("*.warc.gz"))
        if ".wet." not in p.name and ".wat." not in p.name
    ]
    block = b"".join(sources)
    copies = max(1, size // len(block))
    with open(dest, "wb") as f:
        for _ in range(copies):
            f.write(block)
    return copies


def build_wiki(dest: Path, size: int) -> int:
    """The enwiki fixture's article pages, retitled and repeated until ``size`` bytes of XML."""
    xml = bz2.decompress(
        next((FIXTURES / "wiki").glob("enwiki-latest-pages-articles1*.bz2")).read_bytes()
    ).decode()
    head, rest = xml.split("<page>", 1)
    pages = ["<page>" + p.split("</page>", 1)[0] + "</page>" for p in ("<page>" + rest).split("<page>")[1:]]
    articles = [p for p in pages if "<ns>0</ns>" in p and "<redirect" not in p]
    written, copies = 0, 0
    with open(dest, "w", encoding="utf-8") as f:
        f.write(head)
        while written < size:
            for page in articles:
                page = re.sub(
                    r"<title>(.*?)</title>",
                    lambda m, copy=copies: f"<title>{m.group(1)} {copy}</title>",
                    page,
                    count=1,
                )
                written += f.write(page)
            copies += 1
        f.write("</mediawiki>\n")
    return copies


def rss_of_tree(pid: int) -> int:
    """RSS in bytes of ``pid`` and every descendant (pool workers are children)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        pending.extend(int(child) for child in children)
    return total


def measure(input_path: Path, output: Path) -> tuple[list[int], float]:
    """Run ``lmpipe data prep`` on one input with the default config; (RSS samples, seconds)."""
    command = [LMPIPE, "data", "prep", "--input", str(input_path), "--output", str(output)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[int] = []

    def sample() -> None:
        while process.poll() is None:
            samples.append(rss_of_tree(process.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"lmpipe data prep failed on {input_path}:\n{stderr[-2000:]}")
    return [s for s in samples if s > 0], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--format", choices=("warc", "wiki"), default="warc")
    parser.add_argument(
        "--workdir", help="where to build the inputs (default: a temp dir; needs ~2x size free)"
    )
    args = parser.parse_args()
    if not (FIXTURES / args.format).is_dir():
        print(f"no fixtures under {FIXTURES}: memory benchmark skipped")
        return
    build, suffix = (build_warc, ".warc.gz") if args.format == "warc" else (build_wiki, ".xml")
    work = Path(tempfile.mkdtemp(prefix="bench_memory_", dir=args.workdir))
    try:
        rows = []
        for label, size in (("baseline", args.size_mb * 2**20 // 16), ("full", args.size_mb * 2**20)):
            path = work / f"{label}{suffix}"
            build(path, size)
            samples, seconds = measure(path, work / f"out-{label}")
            rows.append((label, path.stat().st_size, samples, seconds))
            path.unlink()
            shutil.rmtree(work / f"out-{label}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'run':<9} {'input MB':>9} {'seconds':>8} {'median RSS MB':>14} {'peak RSS MB':>12}")
    for label, size, samples, seconds in rows:
        print(
            f"{label:<9} {size / 2**20:>9,.0f} {seconds:>8.1f} {statistics.median(samples) / 2**20:>14,.0f} "
            f"{max(samples) / 2**20:>12,.0f}"
        )
    ratio = max(rows[1][2]) / max(rows[0][2])
    print(
        f"peak RSS full / baseline: {ratio:.2f}x (target <= {TARGET:.0f}x) for {args.format}, default config"
    )


if __name__ == "__main__":
    main()
