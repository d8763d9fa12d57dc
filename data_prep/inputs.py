"""Where input files come from: local paths, globs and directories, ``http(s)://`` and
``s3://`` URLs, and Common Crawl style ``*.paths[.gz]`` listings.

``expand_inputs`` turns the ``--input`` patterns into :class:`InputFile` s before any
work starts (every error is one line naming the path; a zero-byte file is not an error
here: its task reports it as ``read/empty_file`` in stats.json). ``open_input`` opens one for
reading: a local file as is; an HTTP(S) URL as a seekable stream that survives dropped
connections by re-requesting from the byte it had reached (``Range: bytes=N-``) with
bounded retries and backoff (an :class:`InputFile` carries its :class:`RetryPolicy`, which
``data prep`` builds from its ``remote`` config); an ``s3://`` URL through ``fsspec`` when
``s3fs`` is installed. A failure after the last retry raises :class:`RemoteInputError`, which
is deliberately *not* an ``OSError``: readers count ``OSError`` as damage in the file and carry
on, but a network that stays down must not silently shorten the input. The prep task records
the whole input as failed instead (``read/remote_failed``, ``data_prep.failures``).
"""

from __future__ import annotations

import glob
import gzip
import http.client
import io
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from data_prep.formats import detect_format, is_hf_dataset
from pipeline.core.errors import InputError, MissingInputError

CC_PREFIX = "https://data.commoncrawl.org/"
"""What relative entries of a ``*.paths`` listing are resolved against (Common Crawl's own)."""
REMOTE_SCHEMES = ("http://", "https://", "s3://")


class RemoteInputError(RuntimeError):
    """A remote input could not be read, even after retries. Not an OSError on purpose (see module doc)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    """Tries per byte position: the count restarts whenever a try makes progress."""
    backoff: float = 1.0
    """Seconds before the first retry; doubled for each further one, up to ``max_wait``."""
    max_wait: float = 30.0
    """Longest wait between tries, seconds; also caps what a server asks for in ``Retry-After``."""
    timeout: float = 60.0
    """Socket timeout of one request, seconds: a server this long silent (before or mid-body) fails a try."""

    def wait(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failed tries in a row: the backoff, or longer if the server
        asked for it (a 503's ``Retry-After``), never more than ``max_wait``."""
        backoff = self.backoff * 2 ** (failures - 1)
        return min(max(backoff, retry_after or 0.0), self.max_wait)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class InputFile:
    location: str
    """An absolute local path or a URL."""
    name: str
    """The file name, for task names and messages."""
    format: str | None
    """What ``detect_format`` tells from the name (None: unknown)."""
    retry: RetryPolicy | None = None
    """How ``open_input`` retries a URL (None: ``DEFAULT_RETRY``)."""

    @property
    def is_remote(self) -> bool:
        return is_remote(self.location)


def is_remote(location: str | Path) -> bool:
    return str(location).startswith(REMOTE_SCHEMES)


def input_name(location: str | Path | InputFile) -> str:
    """The file name of a path or URL (``https://h/a/b.warc.gz?x=1`` -> ``b.warc.gz``)."""
    if isinstance(location, InputFile):
        return location.name
    text = str(location)
    if "://" in text:
        return urllib.parse.urlsplit(text).path.rstrip("/").rpartition("/")[2] or text
    return Path(text).name


def location_of(source: str | Path | InputFile) -> str:
    return source.location if isinstance(source, InputFile) else str(source)


def expand_inputs(patterns: Iterable[str], *, paths_prefix: str = CC_PREFIX) -> list[InputFile]:
    """Paths, globs, directories, URLs and ``*.paths[.gz]`` listings -> the input files, in order, each once.

    Local matches are sorted within each pattern. A directory is either a saved Hugging
    Face dataset (one input) or scanned, not recursively, for files of a known format.
    """
    files: dict[str, InputFile] = {}

    def add(location: str, format: str | None = None) -> None:
        if location not in files:
            files[location] = InputFile(location, input_name(location), format or detect_format(location))

    for pattern in map(str, patterns):
        if is_remote(pattern):
            if _is_listing(pattern):
                raise InputError(f"remote .paths listings are not supported, download it first: {pattern}")
            add(pattern)
            continue
        if "://" in pattern:
            raise InputError(f"unsupported URL scheme (use http://, https:// or s3://): {pattern}")
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise MissingInputError(f"no input file matches {pattern}")
        elif Path(pattern).exists():
            matches = [pattern]
        else:
            raise MissingInputError(f"input not found: {pattern}")
        for match in map(Path, matches):
            if match.is_dir():
                if is_hf_dataset(match):
                    add(str(match.resolve()), "hf")
                    continue
                found = sorted(
                    p for p in match.iterdir() if p.is_file() and (detect_format(p) or _is_listing(p))
                )
                if not found:
                    raise InputError(f"no WARC files or wiki dumps in directory {match}")
            else:
                found = [match]
            for path in found:
                # A zero-byte file is planned like any other: its task counts one ``empty_file``
                # error (data_prep.prep), so one bad file among many is reported, not fatal.
                if _is_listing(path):
                    for entry in read_listing(path, paths_prefix):
                        add(entry)
                else:
                    add(str(path.resolve()))
    return list(files.values())


def _is_listing(path: str | Path) -> bool:
    return input_name(path).lower().endswith((".paths", ".paths.gz"))


def read_listing(path: Path, prefix: str = CC_PREFIX) -> list[str]:
    """The entries of a ``*.paths[.gz]`` file: URLs and absolute paths as they are, the rest
    under ``prefix``."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        entries = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise InputError(f"listing has no entries: {path}")
    resolved = []
    for entry in entries:
        if "://" in entry or entry.startswith("/"):
            resolved.append(entry)
        elif is_remote(prefix):
            resolved.append(prefix.rstrip("/") + "/" + entry.lstrip("/"))
        else:
            resolved.append(str((Path(prefix) / entry).resolve()))
    return resolved


@contextmanager
def open_input(source: str | Path | InputFile, *, retry: RetryPolicy | None = None) -> Iterator[BinaryIO]:
    """A binary, seekable stream over a local file or URL (see the module doc)."""
    location = location_of(source)
    if location.startswith(("http://", "https://")):
        policy = retry or (source.retry if isinstance(source, InputFile) else None) or DEFAULT_RETRY
        stream: BinaryIO = io.BufferedReader(HttpFile(location, policy), buffer_size=1 << 20)
    elif location.startswith("s3://"):
        stream = _open_s3(location)
    else:
        stream = open(location, "rb")
    try:
        yield stream
    finally:
        stream.close()


def _open_s3(location: str) -> BinaryIO:
    try:
        import fsspec
        import s3fs  # noqa: F401  (fsspec finds it by the scheme; import here for a clear message)
    except ImportError:
        raise RemoteInputError(f"s3:// inputs need s3fs: pip install s3fs (for {location})") from None
    try:
        return fsspec.open(location, "rb").open()
    except Exception as exc:  # botocore / s3fs raise many types
        raise RemoteInputError(f"cannot open {location}: {exc}") from exc


_RETRYABLE = (OSError, http.client.HTTPException, socket.timeout)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (its delta-seconds form; an HTTP date, or anything
    else, is ignored: the backoff applies)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


_PERMANENT_STATUS = frozenset({400, 401, 403, 404, 405, 410, 451})


class HttpFile(io.RawIOBase):
    """An HTTP(S) resource as a seekable raw stream.

    One GET is kept open and read sequentially; a seek elsewhere closes it and the next
    read sends ``Range: bytes=<pos>-``. A connection that drops, times out or ends early
    (fewer bytes than the known size) is retried from the byte reached, up to
    ``retry.attempts`` times in a row without progress; so is an error answer other than
    ``_PERMANENT_STATUS`` (500, 503, 429, ...), after its ``Retry-After`` if it sends one. A
    server that ignores ranges is handled by skipping the bytes already read.
    """

    def __init__(self, url: str, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        super().__init__()
        self.url = url
        self.retry = retry
        self.pos = 0
        self.size: int | None = None
        self._response: http.client.HTTPResponse | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence == io.SEEK_END:
            if self.size is None:
                self._with_retries(self._connect)
            if self.size is None:
                raise io.UnsupportedOperation(f"size of {self.url} unknown: cannot seek from the end")
            offset += self.size
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        if offset != self.pos:
            self._drop()
            self.pos = offset
        return self.pos

    def readinto(self, buffer) -> int:
        if len(buffer) == 0 or (self.size is not None and self.pos >= self.size):
            return 0
        return self._with_retries(lambda: self._readinto_once(buffer))

    def close(self) -> None:
        self._drop()
        super().close()

    def _readinto_once(self, buffer) -> int:
        if self._response is None:
            self._connect()
            if self._response is None:  # 416: at or past the end
                return 0
        # What has arrived, not a full buffer: bytes received before a stall are kept, and count as progress.
        chunk = self._response.read1(len(buffer))
        n = len(chunk)
        buffer[:n] = chunk
        if n == 0 and (self.size is None or self.pos >= self.size):
            return 0
        if n == 0:
            raise http.client.IncompleteRead(b"", self.size - self.pos if self.size else None)
        self.pos += n
        return n

    def _with_retries(self, action):
        failures = 0
        while True:
            retry_after = None
            try:
                return action()
            except urllib.error.HTTPError as exc:
                self._drop()
                if exc.code in _PERMANENT_STATUS:
                    raise RemoteInputError(f"cannot read {self.url}: HTTP {exc.code} {exc.reason}") from None
                error: BaseException = exc
                retry_after = retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
            except _RETRYABLE as exc:
                self._drop()
                error = exc
            failures += 1
            if failures >= self.retry.attempts:
                raise RemoteInputError(
                    f"cannot read {self.url} at byte {self.pos} after {failures} attempts: "
                    f"{type(error).__name__}: {error}"
                ) from error
            time.sleep(self.retry.wait(failures, retry_after))

    def _connect(self) -> None:
        request = urllib.request.Request(
            self.url, headers={"User-Agent": "lmpipe-data-prep", "Accept-Encoding": "identity"}
        )
        if self.pos:
            request.add_header("Range", f"bytes={self.pos}-")
        try:
            response = urllib.request.urlopen(request, timeout=self.retry.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # nothing left from pos
                exc.close()
                self.size = self.size if self.size is not None else self.pos
                return
            raise
        if response.status == 206:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit():
                self.size = int(total)
        else:
            length = response.headers.get("Content-Length")
            if (
                length is not None
                and length.isdigit()
                and response.headers.get("Content-Encoding") in (None, "identity")
            ):
                self.size = int(length)
            self._skip(response, self.pos)  # the server sent the whole file: skip what we already have
        self._response = response

    @staticmethod
    def _skip(response: http.client.HTTPResponse, count: int) -> None:
        while count > 0:
            chunk = response.read(min(count, 1 << 20))
            if not chunk:
                raise http.client.IncompleteRead(b"", count)
            count -= len(chunk)

    def _drop(self) -> None:
        if self._response is not None:
            try:
                self._response.close()
            except Exception:
                pass
            self._response = None
