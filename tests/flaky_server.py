"""A real HTTP file server on 127.0.0.1 that fails on purpose, for the tests of remote inputs.

It serves ``files`` (path -> bytes) with ``Range: bytes=N-`` support (206, or 416 past the end) and
answers each GET of a path with the next fault scheduled for it, or normally when none is left:

- ``DROP``: the headers and ``cut_after`` bytes of the body, then the connection is cut;
- ``STALL``: the headers and ``cut_after`` bytes of the body, then silence for ``stall_s`` (longer
  than the client's socket timeout), then the connection is closed;
- ``500``, ``503``: that status instead of the file (a 503 with ``Retry-After: <retry_after>``).

``faults`` maps a path, or ``"*"`` for any path, to the faults its next GETs get, in order;
``broken`` (or ``take_down(path, fault)``) gives a path the fault every GET of it gets until
``heal()``. With ``ranges=False`` Range headers are ignored (200 and the whole file, as some
servers answer). ``requests`` records
every GET as (path, Range header). Both test modules of remote inputs import it (``tests/`` is on
``sys.path`` because ``tests/conftest.py`` is a rootdir conftest without ``__init__.py``).
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import sys
import threading
from collections.abc import Mapping, Sequence

DROP = "drop"
STALL = "stall"
Fault = str | int
"""``DROP``, ``STALL`` or an HTTP status (500, 503)."""


class FlakyServer:
    def __init__(
        self,
        files: Mapping[str, bytes],
        *,
        faults: Mapping[str, Sequence[Fault]] | None = None,
        broken: Mapping[str, Fault] | None = None,
        cut_after: int = 1000,
        stall_s: float = 5.0,
        retry_after: int = 1,
        ranges: bool = True,
    ) -> None:
        self.files = dict(files)
        self.faults = {path: list(queue) for path, queue in (faults or {}).items()}
        self.broken = dict(broken or {})
        self.cut_after, self.stall_s, self.retry_after, self.ranges = cut_after, stall_s, retry_after, ranges
        self.requests: list[tuple[str, str | None]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name.lstrip('/')}"

    def take_down(self, path: str, fault: Fault = 503) -> None:
        """Answer every GET of ``path`` with ``fault`` until ``heal()``."""
        with self._lock:
            self.broken[path] = fault

    def heal(self, *paths: str) -> None:
        """Serve these paths (all, if none is named) normally from now on."""
        with self._lock:
            for path in paths or list(self.broken):
                self.broken.pop(path, None)

    def pending(self) -> dict[str, list[Fault]]:
        """The scheduled faults no GET has had yet."""
        with self._lock:
            return {path: list(queue) for path, queue in self.faults.items() if queue}

    def next_fault(self, path: str, byte_range: str | None) -> Fault | None:
        with self._lock:
            self.requests.append((path, byte_range))
            if path in self.broken:
                return self.broken[path]
            for key in (path, "*"):
                if self.faults.get(key):
                    return self.faults[key].pop(0)
        return None

    def __enter__(self) -> FlakyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # ends every stall at once
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (it timed out, or seeked elsewhere) is expected here, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(server: FlakyServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            byte_range = self.headers.get("Range")
            fault = server.next_fault(self.path, byte_range)
            data = server.files.get(self.path)
            if data is None:
                self.send_error(404)
            elif isinstance(fault, int):
                self._refuse(fault)
            else:
                self._send(data, byte_range, fault)

        def _refuse(self, status: int) -> None:
            body = b"failing on purpose\n"
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", str(server.retry_after))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send(self, data: bytes, byte_range: str | None, fault: Fault | None) -> None:
            start = 0
            if server.ranges and byte_range:
                start = int(byte_range.removeprefix("bytes=").rstrip("-"))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes" if server.ranges else "none")
            self.end_headers()
            if fault is None:
                self.wfile.write(body)
                return
            self.wfile.write(body[: server.cut_after])
            self.wfile.flush()
            if fault == STALL:
                server.stopping.wait(server.stall_s)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler
