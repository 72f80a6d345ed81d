"""A request-counting, fault-injecting HTTP/1.1 proxy for tests against real loopback servers.

`FaultProxy` listens on ``127.0.0.1`` (port chosen by the kernel) and forwards
every connection to one upstream server.  It parses just enough HTTP/1.1 to
split a keep-alive connection into requests and responses, and forwards the
bytes of each message unchanged, so signed requests (S3 SigV4 signs the
``Host`` header and the payload) stay valid.  Every request is recorded in a
log (method, target, ``Range`` header, status, body bytes, times); no other
request header is kept, so credentials never reach the log.

Faults are armed at any time from the test thread and fire on the next
matching requests::

    with FaultProxy(http_server.url) as proxy:
        proxy.status(503, times=2, path_contains="coadd")
        mark = proxy.mark()
        ...  # read through proxy.url
        assert [r.status for r in proxy.requests_since(mark)][:2] == [503, 503]

A record is complete (status, body bytes, end time) before the last byte of
its response, or the closing of its connection, reaches the client, so a test
may read the log as soon as its own client call returns.  Only a stalled
request keeps ``ended`` unset until its stall is over.

`HttpFaultProxy` and `S3FaultProxy` put the proxy in front of the test
servers of ``servers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import itertools
import socket
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from servers import HttpServer, S3Server

__all__ = [
    "Fault",
    "FaultProxy",
    "HttpFaultProxy",
    "ProxyRecord",
    "S3FaultProxy",
    "parse_range",
]

LOOPBACK = "127.0.0.1"
_HEAD_LIMIT = 1 << 20  # largest request or response head accepted
_COPY_SIZE = 1 << 16
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0

STATUS = "status"
DROP_MID_BODY = "drop_mid_body"
STALL = "stall"
RESET = "reset"
TRUNCATE_CONTENT = "truncate_content"
IGNORE_RANGE = "ignore_range"

_S3_ERRORS = {
    400: ("BadRequest", "The request was malformed."),
    403: ("AccessDenied", "Access Denied"),
    404: ("NoSuchKey", "The specified key does not exist."),
    412: ("PreconditionFailed", "At least one of the pre-conditions you specified did not hold"),
    416: ("InvalidRange", "The requested range is not satisfiable"),
    429: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


class ProxyFramingError(Exception):
    """A message that the proxy cannot frame (bad request line, status line or chunk size)."""


# --------------------------------------------------------------------------- records and faults


def parse_range(header: str | None) -> list[tuple[int, int | None]]:
    """Parse a ``Range`` header into ``(start, stop)`` pairs with Python slice meaning.

    ``bytes=a-b`` gives ``(a, b + 1)``, the open range ``bytes=a-`` gives
    ``(a, None)`` and the suffix range ``bytes=-n`` gives ``(-n, None)``: in
    every case ``data[start:stop]`` is the part of ``data`` asked for.

    Parameters
    ----------
    header
        The header value, or `None` for a request without one.

    Returns
    -------
    list of tuple
        One pair per range of the header, in order; empty for `None`.

    Raises
    ------
    ValueError
        If the header is not a ``bytes=`` range set.
    """
    if header is None:
        return []
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise ValueError(f"Range header {header!r} is not a bytes range")
    ranges: list[tuple[int, int | None]] = []
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not dash or not (first or last):
            raise ValueError(f"Range header {header!r} has a bad range {part!r}")
        try:
            if not first:
                ranges.append((-int(last), None))
            elif not last:
                ranges.append((int(first), None))
            else:
                ranges.append((int(first), int(last) + 1))
        except ValueError:
            raise ValueError(f"Range header {header!r} has a bad range {part!r}") from None
    return ranges


@dataclasses.dataclass
class ProxyRecord:
    """One request seen by the proxy.

    Attributes
    ----------
    method
        The request method.
    target
        The request target: path and query string, as sent by the client.
    range
        The ``Range`` header of the request, `None` when absent.
    host
        The ``Host`` header of the request, `None` when absent.
    connection
        Number of the client connection (1, 2, ... in order of acceptance).
    started
        `time.monotonic` when the request head was read.
    status
        Final status sent to the client (1xx interim responses are not
        recorded); `None` when no status line was sent (reset, stall, or an
        upstream failure).
    body_bytes
        Response body bytes sent to the client, after the head (chunk framing
        included for a chunked response).
    content_range
        The ``Content-Range`` header of the response, `None` when absent.
    ended
        `time.monotonic` when the proxy finished with the request; `None`
        while it is in progress.
    fault
        Name of the fault that fired on this request (``"status"``,
        ``"drop_mid_body"``, ``"stall"``, ``"reset"``, ``"truncate_content"``,
        ``"ignore_range"``), `None` for plain forwarding.
    error
        What went wrong while forwarding (client or upstream connection lost,
        bad framing), `None` otherwise.  Faults are not errors.
    """

    method: str
    target: str
    range: str | None
    host: str | None
    connection: int
    started: float
    status: int | None = None
    body_bytes: int = 0
    content_range: str | None = None
    ended: float | None = None
    fault: str | None = None
    error: str | None = None

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]

    @property
    def byte_ranges(self) -> list[tuple[int, int | None]]:
        """The ranges of the ``Range`` header, parsed by `parse_range`."""
        return parse_range(self.range)


@dataclasses.dataclass(eq=False)
class Fault:
    """A fault armed on a `FaultProxy`; returned by the methods that arm faults.

    Attributes
    ----------
    kind
        The name of the fault (the name of the `FaultProxy` method).
    times
        How many matching requests it fires on; `None` for every one until
        it is cancelled.
    path_contains
        Only requests whose target contains this string match; `None` for any.
    ranged_only
        Only requests with a ``Range`` header match.
    method
        Only requests with this method match (upper case); `None` for any.
    code, retry_after, body, seconds, after_bytes, missing_bytes
        The settings given to the method that armed it (unused ones keep
        their defaults).
    fired
        How many requests it has fired on so far.
    cancelled
        Whether `cancel` (or `FaultProxy.clear_faults`) disarmed it.
    """

    kind: str
    times: int | None
    path_contains: str | None
    ranged_only: bool
    method: str | None
    code: int = 0
    retry_after: str | None = None
    body: bytes | None = None
    seconds: float = 0.0
    after_bytes: int | None = None
    missing_bytes: int = 1
    fired: int = 0
    cancelled: bool = False

    @property
    def exhausted(self) -> bool:
        """Whether the fault will fire no more."""
        return self.cancelled or (self.times is not None and self.fired >= self.times)

    def matches(self, method: str, target: str, range_header: str | None) -> bool:
        """Whether a request with these properties would trigger the fault (if not exhausted)."""
        return (
            (self.method is None or self.method == method)
            and (self.path_contains is None or self.path_contains in target)
            and (not self.ranged_only or range_header is not None)
        )

    def cancel(self) -> None:
        """Disarm the fault."""
        self.cancelled = True


# --------------------------------------------------------------------------- HTTP/1.1 framing


@dataclasses.dataclass
class _Head:
    """A parsed message head; ``raw`` keeps its exact bytes."""

    raw: bytes
    start: tuple[str, str, str]
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        name = name.lower()
        values = [value for key, value in self.headers if key.lower() == name]
        return ", ".join(values) if values else None

    def has_token(self, name: str, token: str) -> bool:
        value = self.get(name)
        return value is not None and token in (item.strip().lower() for item in value.split(","))

    def without(self, name: str) -> bytes:
        """The raw head with every ``name`` header line removed, other bytes unchanged."""
        lines = self.raw.split(b"\r\n")
        prefix = name.lower().encode("latin-1") + b":"
        kept = [lines[0], *(line for line in lines[1:] if not line.lower().startswith(prefix))]
        return b"\r\n".join(kept)


def _parse_head(raw: bytes) -> _Head:
    lines = raw[:-4].decode("latin-1").split("\r\n")
    start = lines[0].split(" ", 2)
    if len(start) < 2:
        raise ProxyFramingError(f"bad start line {lines[0]!r}")
    if len(start) == 2:
        start.append("")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ProxyFramingError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return _Head(raw, (start[0], start[1], start[2]), headers)


def _framing(head: _Head, bodyless: bool) -> tuple[str, int]:
    """How the body after ``head`` is delimited: ``("none"|"length"|"chunked"|"close", length)``."""
    if bodyless:
        return "none", 0
    transfer = head.get("transfer-encoding")
    if transfer is not None and transfer.split(",")[-1].strip().lower() == "chunked":
        return "chunked", 0
    length = head.get("content-length")
    if length is not None:
        try:
            size = int(length.split(",")[0])
        except ValueError:
            raise ProxyFramingError(f"bad Content-Length {length!r}") from None
        return ("length", size) if size else ("none", 0)
    # Without either header a request has no body, and a response runs until the connection closes.
    return ("close", 0) if head.start[0].startswith("HTTP/") else ("none", 0)


Sink = Callable[[bytes, bool], Awaitable[bool]]


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """Read a message head; `None` on a clean end of stream before it."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None


async def _copy_length(reader: asyncio.StreamReader, size: int, send: Sink) -> None:
    remaining = size
    while remaining:
        piece = await reader.read(min(_COPY_SIZE, remaining))
        if not piece:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(piece)
        if not await send(piece, remaining == 0):
            return


async def _copy_chunked(reader: asyncio.StreamReader, send: Sink) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProxyFramingError(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            tail = bytearray(line)
            while True:
                trailer = await reader.readuntil(b"\r\n")
                tail += trailer
                if trailer == b"\r\n":
                    break
            await send(bytes(tail), True)
            return
        if not await send(line, False):
            return
        remaining = size + 2  # data and its CRLF
        while remaining:
            piece = await reader.read(min(_COPY_SIZE, remaining))
            if not piece:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(piece)
            if not await send(piece, False):
                return


async def _copy_until_close(reader: asyncio.StreamReader, send: Sink) -> None:
    while piece := await reader.read(_COPY_SIZE):
        if not await send(piece, False):
            return
    await send(b"", True)


async def _copy_body(reader: asyncio.StreamReader, framing: tuple[str, int], send: Sink) -> None:
    kind, size = framing
    if kind == "length":
        await _copy_length(reader, size, send)
    elif kind == "chunked":
        await _copy_chunked(reader, send)
    elif kind == "close":
        await _copy_until_close(reader, send)


async def _discard(data: bytes, last: bool) -> bool:
    return True


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


def _error_response(fault: Fault, request: _Head, request_number: int, close: bool) -> tuple[bytes, bytes]:
    """Head and body of the response that a `status` fault sends."""
    code = fault.code
    try:
        reason = http.HTTPStatus(code).phrase
    except ValueError:
        reason = "Error"
    body = fault.body
    if body is None:
        error_code, message = _S3_ERRORS.get(code, (reason.replace(" ", "") or "Error", reason))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{error_code}</Code><Message>{escape(message)}</Message>"
            f"<Resource>{escape(request.start[1])}</Resource>"
            f"<RequestId>faultproxy-{request_number}</RequestId></Error>"
        ).encode()
    lines = [f"HTTP/1.1 {code} {reason}", f"x-amz-request-id: faultproxy-{request_number}"]
    if code in (204, 304):
        body = b""  # these statuses never carry a body nor its length
    else:
        lines += ["Content-Type: application/xml", f"Content-Length: {len(body)}"]
    if fault.retry_after is not None:
        lines.append(f"Retry-After: {fault.retry_after}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head, (b"" if request.start[0] == "HEAD" else body)


# --------------------------------------------------------------------------- the proxy


class _Link:
    """One client connection and the upstream connection that serves it."""

    def __init__(
        self, number: int, task: asyncio.Task[None], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.number = number
        self.task = task
        self.reader = reader
        self.writer = writer
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None


class _BodyOut:
    """Sends a response body to the client, keeps its record current, and cuts it where a fault says.

    The record gets its end time before the last piece is written (or, when
    the body is cut, before the cut piece), unless a stall follows.
    """

    def __init__(
        self,
        proxy: FaultProxy,
        record: ProxyRecord,
        writer: asyncio.StreamWriter,
        cut_at: int | None,
        hold_end: bool,
        stall: bool,
    ) -> None:
        self.proxy = proxy
        self.record = record
        self.writer = writer
        self.cut_at = cut_at
        self.hold_end = hold_end
        self.stall = stall
        self.sent = 0
        self.cut = False

    async def send(self, data: bytes, last: bool) -> bool:
        if last and self.hold_end:
            data, self.cut = b"", True
        elif self.cut_at is not None:
            room = self.cut_at - self.sent
            if len(data) > room or (len(data) == room and not last):
                data, self.cut = data[:room], True
        self.sent += len(data)
        changes: dict[str, Any] = {"body_bytes": self.sent}
        if (last or self.cut) and not self.stall:
            changes["ended"] = time.monotonic()
        self.proxy._update(self.record, **changes)
        if data:
            self.writer.write(data)
            await self.writer.drain()
        return not self.cut


class FaultProxy:
    """An HTTP/1.1 proxy on ``127.0.0.1`` that logs requests and injects faults.

    It runs an asyncio event loop in a background thread; every method may be
    called from any thread.  Use it as a context manager or call `close`.

    Parameters
    ----------
    upstream
        The server to forward to: ``"http://host:port"`` (any path is
        ignored) or ``"host:port"``.

    Attributes
    ----------
    host, port
        Where the proxy listens.
    url
        ``http://127.0.0.1:<port>``, the base URL clients use instead of the
        upstream's.
    upstream, upstream_url
        ``(host, port)`` of the upstream server, and ``http://host:port``.
    errors
        Unexpected exceptions raised while serving connections (a test may
        assert that it stays empty).
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream if "//" in upstream else f"//{upstream}")
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream {upstream!r} needs a host and a port")
        self.upstream: tuple[str, int] = (parts.hostname, parts.port)
        self.upstream_url = f"http://{parts.hostname}:{parts.port}"
        self.host = LOOPBACK
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._log: list[ProxyRecord] = []
        self._faults: list[Fault] = []
        self._connections = itertools.count(1)
        self._links: set[_Link] = set()
        self._stopping = False
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"faultproxy->{upstream}", daemon=True)
        self._thread.start()
        try:
            start = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
            self._server = start.result(_START_TIMEOUT)
        except BaseException:
            self._stop_loop()
            raise
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"FaultProxy({self.url} -> {self.upstream_url}, {state})"

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening, close every connection (ending any stall) and stop the thread.

        Idempotent.  Afterwards the port refuses connections and no thread or
        socket of the proxy is left.
        """
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(_STOP_TIMEOUT)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, self.host, 0, limit=_HEAD_LIMIT)

    async def _stop(self) -> None:
        self._stopping = True
        self._server.close()
        # Abort rather than close: a client that does not read would keep a
        # closing transport (and its task) alive while its buffer waits.
        while links := list(self._links):
            for link in links:
                for writer in (link.writer, link.up_writer):
                    if writer is not None:
                        writer.transport.abort()
            tasks = [link.task for link in links]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._links.difference_update(link for link in links if link.task.done())
        await self._server.wait_closed()
        await self._loop.shutdown_default_executor()

    # ------------------------------------------------------------------ log

    def _update(self, record: ProxyRecord, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(record, name, value)

    @property
    def log(self) -> list[ProxyRecord]:
        """Copies of every record so far, in the order the request heads arrived."""
        with self._lock:
            return [dataclasses.replace(record) for record in self._log]

    def mark(self) -> int:
        """A position in the log: requests arriving later come after it."""
        with self._lock:
            return len(self._log)

    def requests_since(
        self, mark: int = 0, *, path_contains: str | None = None, method: str | None = None
    ) -> list[ProxyRecord]:
        """Copies of the records from ``mark`` on, optionally filtered.

        Parameters
        ----------
        mark
            A value returned by `mark` (0 for the whole log).
        path_contains
            Keep only requests whose target contains this string.
        method
            Keep only requests with this method.
        """
        return [
            record
            for record in self.log[mark:]
            if (path_contains is None or path_contains in record.target) and (method is None or record.method == method)
        ]

    def ranges_since(self, mark: int = 0, *, path_contains: str | None = None) -> list[tuple[int, int | None]]:
        """The requested byte ranges from ``mark`` on, in request order, parsed by `parse_range`.

        Requests without a ``Range`` header contribute nothing; a multi-range
        header contributes each of its ranges.
        """
        return [
            pair for record in self.requests_since(mark, path_contains=path_contains) for pair in record.byte_ranges
        ]

    def body_bytes_since(self, mark: int = 0, *, path_contains: str | None = None) -> int:
        """Total response body bytes sent to clients from ``mark`` on."""
        return sum(record.body_bytes for record in self.requests_since(mark, path_contains=path_contains))

    # ------------------------------------------------------------------ faults

    def _arm(self, kind: str, times: int | None, **settings: Any) -> Fault:
        if times is not None and times < 1:
            raise ValueError(f"times must be a positive count or None, not {times!r}")
        method = settings.pop("method")
        fault = Fault(kind, times, method=None if method is None else method.upper(), **settings)
        with self._lock:
            self._faults.append(fault)
        return fault

    @property
    def faults(self) -> list[Fault]:
        """The armed faults that can still fire, in the order they were armed."""
        with self._lock:
            return [fault for fault in self._faults if not fault.exhausted]

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self._lock:
            for fault in self._faults:
                fault.cancel()
            self._faults.clear()

    def _claim(self, method: str, target: str, range_header: str | None) -> Fault | None:
        """The first armed fault matching a request, counted as fired; `None` if none matches."""
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted and fault.matches(method, target, range_header):
                    fault.fired += 1
                    return fault
            self._faults = [fault for fault in self._faults if not fault.exhausted]
        return None

    def status(
        self,
        code: int,
        times: int | None = 1,
        retry_after: float | str | None = None,
        *,
        body: bytes | None = None,
        path_contains: str | None = None,
        ranged_only: bool = False,
        method: str | None = None,
    ) -> Fault:
        """Answer matching requests with ``code`` without contacting the upstream.

        The request body is read and dropped (unless the client waits for
        ``100 Continue``, in which case the connection is closed after the
        answer).  The default body is an S3 error document
        (``<Error><Code>SlowDown</Code>...`` for 503 and 429,
        ``InternalError`` for 500, ``PreconditionFailed`` for 412,
        ``NoSuchKey`` for 404 ...) with ``Content-Type: application/xml``.

        Parameters
        ----------
        code
            The status code.
        times
            Number of matching requests to answer; `None` for all until cancelled.
        retry_after
            Value of a ``Retry-After`` header to add; `None` for none.
        body
            Body to send instead of the S3 error document (still labelled
            ``application/xml``).
        path_contains, ranged_only, method
            Which requests match: target contains ``path_contains``, has a
            ``Range`` header, has this method.
        """
        if not 200 <= code <= 599:
            raise ValueError(f"code must be a final status (200-599), not {code}")
        return self._arm(
            STATUS,
            times,
            code=code,
            retry_after=None if retry_after is None else str(retry_after),
            body=body,
            path_contains=path_contains,
            ranged_only=ranged_only,
            method=method,
        )

    def drop_mid_body(
        self,
        after_bytes: int,
        times: int | None = 1,
        *,
        path_contains: str | None = None,
        ranged_only: bool = False,
        method: str | None = None,
    ) -> Fault:
        """Forward the response head and ``after_bytes`` of its body, then close the connection.

        A body of at most ``after_bytes`` bytes goes through whole, and the
        connection is closed after it.  See `status` for the other parameters.
        """
        if after_bytes < 0:
            raise ValueError(f"after_bytes must be >= 0, not {after_bytes}")
        return self._arm(
            DROP_MID_BODY,
            times,
            after_bytes=after_bytes,
            path_contains=path_contains,
            ranged_only=ranged_only,
            method=method,
        )

    def stall(
        self,
        seconds: float,
        times: int | None = 1,
        *,
        after_bytes: int | None = None,
        path_contains: str | None = None,
        ranged_only: bool = False,
        method: str | None = None,
    ) -> Fault:
        """Send nothing for ``seconds``, then close the connection.

        With ``after_bytes=None`` the request is read and never forwarded: the
        client waits for a response head that never comes.  With an integer,
        the request is forwarded and the response head and ``after_bytes`` of
        its body are sent before the silence (a stall while reading the body).
        `close` ends a stall early.  See `status` for the other parameters.
        """
        if seconds < 0 or (after_bytes is not None and after_bytes < 0):
            raise ValueError("seconds and after_bytes must be >= 0")
        return self._arm(
            STALL,
            times,
            seconds=seconds,
            after_bytes=after_bytes,
            path_contains=path_contains,
            ranged_only=ranged_only,
            method=method,
        )

    def reset(
        self,
        times: int | None = 1,
        *,
        path_contains: str | None = None,
        ranged_only: bool = False,
        method: str | None = None,
    ) -> Fault:
        """Read the request, then reset the client connection (TCP RST) without forwarding it.

        See `status` for the parameters.
        """
        return self._arm(RESET, times, path_contains=path_contains, ranged_only=ranged_only, method=method)

    def truncate_content(
        self,
        times: int | None = 1,
        *,
        missing_bytes: int = 1,
        path_contains: str | None = None,
        ranged_only: bool = False,
        method: str | None = None,
    ) -> Fault:
        """Forward the real response head but withhold the last ``missing_bytes`` of the body, then close.

        For a chunked response the terminating chunk is withheld instead.  See
        `status` for the other parameters.
        """
        if missing_bytes < 1:
            raise ValueError(f"missing_bytes must be >= 1, not {missing_bytes}")
        return self._arm(
            TRUNCATE_CONTENT,
            times,
            missing_bytes=missing_bytes,
            path_contains=path_contains,
            ranged_only=ranged_only,
            method=method,
        )

    def ignore_range(
        self, times: int | None = 1, *, path_contains: str | None = None, method: str | None = None
    ) -> Fault:
        """Forward ranged requests without their ``Range`` header: upstream answers with the whole object.

        Only requests with a ``Range`` header match.  The record keeps the
        ``Range`` the client sent.  See `status` for the other parameters.
        """
        return self._arm(IGNORE_RANGE, times, path_contains=path_contains, ranged_only=True, method=method)

    # ------------------------------------------------------------------ serving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        link = _Link(next(self._connections), task, reader, writer)
        self._links.add(link)
        try:
            while not self._stopping and await self._exchange(link):
                pass
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # kept for the test to inspect
            self.errors.append(exc)
        finally:
            await self._finish(link)

    async def _finish(self, link: _Link) -> None:
        """Close both connections of ``link``; never raises, so its task always ends normally."""
        writers = [writer for writer in (link.up_writer, link.writer) if writer is not None]
        for writer in writers:
            if self._stopping:
                writer.transport.abort()
            else:
                writer.close()
        for writer in writers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer.wait_closed()
        self._links.discard(link)

    async def _exchange(self, link: _Link) -> bool:
        """Serve one request of ``link``; return whether the connection stays open."""
        raw = await _read_head(link.reader)
        if raw is None:
            return False
        request = _parse_head(raw)
        method, target = request.start[0], request.start[1]
        range_header = request.get("range")
        with self._lock:
            number = len(self._log) + 1
            record = ProxyRecord(method, target, range_header, request.get("host"), link.number, time.monotonic())
            self._log.append(record)
        fault = self._claim(method, target, range_header)
        if fault is not None:
            self._update(record, fault=fault.kind)
        try:
            if fault is not None and (
                fault.kind in (STATUS, RESET) or (fault.kind == STALL and fault.after_bytes is None)
            ):
                return await self._answer_locally(link, request, record, fault, number)
            return await self._forward(link, request, record, fault)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProxyFramingError) as exc:
            self._update(record, error=f"{type(exc).__name__}: {exc}", ended=time.monotonic())
            return False

    async def _answer_locally(
        self, link: _Link, request: _Head, record: ProxyRecord, fault: Fault, number: int
    ) -> bool:
        waits_for_continue = request.has_token("expect", "100-continue")
        if not waits_for_continue:
            await _copy_body(link.reader, _framing(request, False), _discard)
        if fault.kind == RESET:
            self._update(record, ended=time.monotonic())
            _reset(link.writer)
            return False
        if fault.kind == STALL:
            await asyncio.sleep(fault.seconds)
            self._update(record, ended=time.monotonic())
            return False
        close = waits_for_continue or request.has_token("connection", "close")
        head, body = _error_response(fault, request, number, close)
        self._update(record, status=fault.code, body_bytes=len(body), ended=time.monotonic())
        link.writer.write(head + body)
        await link.writer.drain()
        return not close

    async def _upstream(self, link: _Link) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The upstream connection of ``link``, opened anew if there is none or upstream closed it."""
        if link.up_reader is None or link.up_writer is None or link.up_reader.at_eof():
            await _close(link.up_writer)
            link.up_reader = link.up_writer = None
            link.up_reader, link.up_writer = await asyncio.open_connection(*self.upstream, limit=_HEAD_LIMIT)
        return link.up_reader, link.up_writer

    async def _drop_upstream(self, link: _Link) -> None:
        writer, link.up_reader, link.up_writer = link.up_writer, None, None
        await _close(writer)

    async def _forward(self, link: _Link, request: _Head, record: ProxyRecord, fault: Fault | None) -> bool:
        """Forward one request and its response; return whether the client connection stays open."""
        up_reader, up_writer = await self._upstream(link)
        kind = None if fault is None else fault.kind
        up_writer.write(request.without("range") if kind == IGNORE_RANGE else request.raw)

        async def to_upstream(data: bytes, last: bool) -> bool:
            up_writer.write(data)
            await up_writer.drain()
            return True

        def on_pump_done(done: asyncio.Task[None]) -> None:
            # A request body that cannot be delivered leaves upstream waiting: hang up on it.
            if not done.cancelled() and done.exception() is not None:
                up_writer.close()

        # The request body is pumped while the response is read, so that an
        # upstream "100 Continue" reaches a client that waits for it.
        request_framing = _framing(request, False)
        pump: asyncio.Task[None] | None = None
        if request_framing[0] != "none":
            pump = asyncio.create_task(_copy_body(link.reader, request_framing, to_upstream))
            pump.add_done_callback(on_pump_done)
        else:
            await up_writer.drain()
        closing = kind in (DROP_MID_BODY, STALL, TRUNCATE_CONTENT)
        try:
            response, code = await self._final_response_head(link, up_reader)
            framing = _framing(response, request.start[0] == "HEAD" or code in (204, 304))
            cut_at: int | None = None
            hold_end = False
            if kind in (DROP_MID_BODY, STALL):
                assert fault is not None and fault.after_bytes is not None
                cut_at = fault.after_bytes
            elif kind == TRUNCATE_CONTENT:
                assert fault is not None
                if framing[0] == "length":
                    cut_at = max(0, framing[1] - fault.missing_bytes)
                else:
                    hold_end = framing[0] == "chunked"
            changes: dict[str, Any] = {"status": code, "content_range": response.get("content-range")}
            if framing[0] == "none" and kind != STALL:
                changes["ended"] = time.monotonic()
            self._update(record, **changes)
            link.writer.write(response.raw)
            await link.writer.drain()
            body_out = _BodyOut(self, record, link.writer, cut_at, hold_end, stall=kind == STALL)
            await _copy_body(up_reader, framing, body_out.send)
            closing = closing or (
                framing[0] == "close"
                or request.has_token("connection", "close")
                or response.has_token("connection", "close")
                or (response.start[0] == "HTTP/1.0" and not response.has_token("connection", "keep-alive"))
            )
            if pump is not None and not closing:
                # Upstream may answer before it has read the whole request body
                # (nginx does for a 405); keeping the connection open, it reads
                # and drops the rest, so the rest is still forwarded.
                await pump
        finally:
            if pump is not None and not pump.done():
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
                await self._drop_upstream(link)
        if pump is not None and not pump.cancelled() and (failure := pump.exception()) is not None:
            raise failure
        if kind in (DROP_MID_BODY, STALL, TRUNCATE_CONTENT):
            assert fault is not None
            await self._drop_upstream(link)  # the rest of the response may still be on its way
            if kind == STALL:
                await asyncio.sleep(fault.seconds)
                self._update(record, ended=time.monotonic())
        return not closing

    async def _final_response_head(self, link: _Link, up_reader: asyncio.StreamReader) -> tuple[_Head, int]:
        """Read response heads, passing interim (1xx) ones to the client, until the final one."""
        while True:
            raw = await _read_head(up_reader)
            if raw is None:
                raise ConnectionResetError("upstream closed the connection before answering")
            response = _parse_head(raw)
            try:
                code = int(response.start[1])
            except ValueError:
                raise ProxyFramingError(f"bad status line {response.start!r}") from None
            if code >= 200 or code == 101:
                return response, code
            link.writer.write(raw)
            await link.writer.drain()


# --------------------------------------------------------------------------- proxies for the test servers


class HttpFaultProxy(FaultProxy):
    """A `FaultProxy` in front of a running `servers.HttpServer` (nginx).

    Parameters
    ----------
    server
        The nginx server to forward to.
    """

    def __init__(self, server: HttpServer) -> None:
        super().__init__(server.url)
        self.server = server

    def url_for(self, server_url: str) -> str:
        """The URL that reaches ``server_url`` (a URL of the server) through the proxy."""
        if not server_url.startswith(self.server.url + "/"):
            raise ValueError(f"{server_url!r} is not a URL of {self.server.url}")
        return self.url + server_url[len(self.server.url) :]

    def publish(self, path: Path | str, name: str | None = None) -> str:
        """Publish a file on the server (see `servers.HttpServer.publish`); return its URL through the proxy."""
        return self.url_for(self.server.publish(path, name))

    def publish_bytes(self, data: bytes, name: str = "blob.bin") -> str:
        """Publish ``data`` on the server under a unique name; return its URL through the proxy."""
        return self.url_for(self.server.publish_bytes(data, name))


class S3FaultProxy(FaultProxy):
    """A `FaultProxy` in front of a running `servers.S3Server` (SeaweedFS).

    Parameters
    ----------
    server
        The S3 server to forward to.
    """

    def __init__(self, server: S3Server) -> None:
        super().__init__(server.endpoint_url)
        self.server = server
        self.bucket = server.bucket

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs keyword arguments that reach the server through the proxy."""
        return {"key": self.server.key, "secret": self.server.secret, "client_kwargs": {"endpoint_url": self.url}}

    def filesystem(self, **options: Any) -> Any:
        """A fresh `s3fs.S3FileSystem` talking through the proxy; ``options`` are added to `storage_options`."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **{**self.storage_options, **options})

    def upload(self, path: Path | str, key: str | None = None) -> str:
        """Upload a file straight to the server (not through the proxy); return its ``s3://`` URL."""
        return self.server.upload(path, key)

    def upload_bytes(self, data: bytes, key: str | None = None) -> str:
        """Write ``data`` straight to the server under ``key`` (a unique one by default); return its ``s3://`` URL."""
        key = key or f"blob-{uuid.uuid4().hex[:8]}.bin"
        self.server.filesystem().pipe_file(f"{self.bucket}/{key}", data)
        return f"s3://{self.bucket}/{key}"
