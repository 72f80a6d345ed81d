"""The fault-injecting proxy itself, in front of the real nginx and SeaweedFS servers.

Pass-through must be byte-identical (S3 signatures included), the proxy log must
agree with what the clients did and with nginx's own access log, and every fault
must be seen by a plain client as what it claims to be.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import botocore.config
import botocore.session
import fsspec
import numpy as np
import pytest
from faultproxy import FaultProxy, HttpFaultProxy, ProxyRecord, S3FaultProxy, parse_range
from servers import HttpServer, S3Server

DATA = np.random.default_rng(20240917).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
MIB = 2**20


def _path(url: str) -> str:
    return urlsplit(url).path


def _target(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _connection(proxy: FaultProxy, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout)


def _get(proxy: FaultProxy, url: str, byte_range: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a fresh connection: ``(status, body)``."""
    conn = _connection(proxy, timeout)
    try:
        conn.request("GET", _path(url), headers={} if byte_range is None else {"Range": byte_range})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _summary(records: list[ProxyRecord]) -> list[tuple[str, str | None, int | None, int]]:
    return [(r.method, r.range, r.status, r.body_bytes) for r in records]


# --------------------------------------------------------------------------- S3
# First in the file: SeaweedFS can take seconds to stop when its last write is recent.


def _secret_free(records: list[ProxyRecord], secret: str) -> None:
    text = repr(records)
    for needle in (secret, "Signature=", "Credential=", "AWS4-HMAC-SHA256"):
        assert needle not in text


def test_s3_ranged_reads_pass_through(s3_proxy: S3FaultProxy, s3_server: S3Server) -> None:
    url = s3_proxy.upload_bytes(DATA)
    fs = s3_proxy.filesystem()
    mark = s3_proxy.mark()
    assert fs.cat_file(url, start=100, end=5000) == DATA[100:5000]
    assert fs.cat_file(url, start=len(DATA) - 10, end=len(DATA)) == DATA[-10:]
    key = url.removeprefix("s3://")
    records = s3_proxy.requests_since(mark, path_contains=key, method="GET")
    assert [(r.range, r.status, r.body_bytes) for r in records] == [
        ("bytes=100-4999", 206, 4900),
        (f"bytes={len(DATA) - 10}-{len(DATA) - 1}", 206, 10),
    ]
    assert all(r.host == f"{s3_proxy.host}:{s3_proxy.port}" for r in records)
    assert s3_proxy.ranges_since(mark, path_contains=key) == [(100, 5000), (len(DATA) - 10, len(DATA))]
    _secret_free(s3_proxy.log, s3_server.secret)
    assert s3_proxy.errors == []


def test_s3_uploads_keep_valid_signatures(s3_proxy: S3FaultProxy, s3_server: S3Server, tmp_path: Path) -> None:
    fs = s3_proxy.filesystem()
    small_key = f"{s3_proxy.bucket}/faultproxy/small.bin"
    mark = s3_proxy.mark()
    fs.pipe_file(small_key, DATA)
    puts = s3_proxy.requests_since(mark, path_contains="small.bin", method="PUT")
    assert [r.status for r in puts] == [200]

    big = np.random.default_rng(7).integers(0, 256, 10 * MIB + 12345, dtype=np.uint8).tobytes()
    (tmp_path / "big.bin").write_bytes(big)
    big_key = f"{s3_proxy.bucket}/faultproxy/big.bin"
    mark = s3_proxy.mark()
    fs.put_file(str(tmp_path / "big.bin"), big_key, chunksize=5 * MIB)
    records = s3_proxy.requests_since(mark, path_contains="big.bin")
    assert [r.status for r in records] == [200] * 5
    assert records[0].method == "POST" and records[0].target.endswith("?uploads")
    assert sorted(r.target.split("partNumber=")[1][0] for r in records[1:4]) == ["1", "2", "3"]
    assert {r.method for r in records[1:4]} == {"PUT"}
    assert records[4].method == "POST" and "uploadId=" in records[4].target
    _secret_free(s3_proxy.log, s3_server.secret)

    # Read back straight from the server, not through the proxy.
    direct = s3_server.filesystem()
    assert direct.cat_file(small_key) == DATA
    assert direct.cat_file(big_key) == big
    assert s3_proxy.errors == []


def _read_response(stream: socket.socket) -> tuple[bytes, bytes]:
    """Read one response head (and its Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = stream.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        body += stream.recv(65536)
    return head, body


def test_s3_expect_continue_and_chunked_uploads_pass_through(s3_proxy: S3FaultProxy, s3_server: S3Server) -> None:
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=s3_proxy.url,
        aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret,
        region_name="us-east-1",
        config=botocore.config.Config(signature_version="s3v4"),
    )
    try:
        keys = ["faultproxy/expect.bin", "faultproxy/chunked.bin"]
        urls = [client.generate_presigned_url("put_object", {"Bucket": s3_proxy.bucket, "Key": k}) for k in keys]
    finally:
        client.close()
    body = DATA[:70_000]
    mark = s3_proxy.mark()
    with socket.create_connection((s3_proxy.host, s3_proxy.port), timeout=5) as stream:
        host = f"Host: {s3_proxy.host}:{s3_proxy.port}\r\n"
        stream.sendall(
            f"PUT {_target(urls[0])} HTTP/1.1\r\n{host}Content-Length: {len(body)}\r\n".encode()
            + b"Expect: 100-continue\r\n\r\n"
        )
        interim, _ = _read_response(stream)
        assert interim.startswith(b"HTTP/1.1 100 ")
        stream.sendall(body)
        final, _ = _read_response(stream)
        assert final.startswith(b"HTTP/1.1 200 ")
        # Same connection: a chunked body.
        stream.sendall(f"PUT {_target(urls[1])} HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n".encode())
        for piece in (body[:1000], body[1000:]):
            stream.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        stream.sendall(b"0\r\n\r\n")
        final, _ = _read_response(stream)
        assert final.startswith(b"HTTP/1.1 200 ")
    records = s3_proxy.requests_since(mark)
    assert [(r.method, r.status, r.connection) for r in records] == [("PUT", 200, records[0].connection)] * 2
    direct = s3_server.filesystem()
    assert [direct.cat_file(f"{s3_proxy.bucket}/{k}") for k in keys] == [body, body]


def test_s3_clients_read_the_injected_errors(s3_proxy: S3FaultProxy) -> None:
    url = s3_proxy.upload_bytes(DATA)
    key = url.removeprefix("s3://")
    fs = s3_proxy.filesystem()
    s3_proxy.status(503, times=1, path_contains=key, ranged_only=True)
    mark = s3_proxy.mark()
    assert fs.cat_file(url, start=0, end=1000) == DATA[:1000]  # SlowDown is retried by botocore
    assert [(r.status, r.fault) for r in s3_proxy.requests_since(mark, path_contains=key)] == [
        (503, "status"),
        (206, None),
    ]
    s3_proxy.status(404, times=None, path_contains=key)
    with pytest.raises(FileNotFoundError):
        fs.cat_file(url, start=0, end=1000)


def test_parse_range_has_slice_meaning() -> None:
    data = bytes(range(100))
    pairs = parse_range("bytes=10-19, 90-,-5")
    assert pairs == [(10, 20), (90, None), (-5, None)]
    assert [data[slice(*p)] for p in pairs] == [bytes(range(10, 20)), bytes(range(90, 100)), bytes(range(95, 100))]
    assert parse_range(None) == []
    for bad in ("items=0-1", "bytes=", "bytes=a-b", "bytes=-"):
        with pytest.raises(ValueError, match="Range header"):
            parse_range(bad)


def test_http_pass_through_is_byte_identical_and_logged_like_nginx(
    http_proxy: HttpFaultProxy, http_server: HttpServer
) -> None:
    url = http_proxy.publish_bytes(DATA, "pass.bin")
    assert url.startswith(http_proxy.url + "/")
    mark, nginx_mark = http_proxy.mark(), http_server.mark()
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200 and response.read() == DATA
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=1000-4999"}), timeout=5) as resp:
        assert resp.status == 206 and resp.read() == DATA[1000:5000]
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=-100"}), timeout=5) as resp:
        assert resp.status == 206 and resp.read() == DATA[-100:]

    records = http_proxy.requests_since(mark)
    expected = [("GET", None, 200, len(DATA)), ("GET", "bytes=1000-4999", 206, 4000), ("GET", "bytes=-100", 206, 100)]
    assert _summary(records) == expected
    assert [r.path for r in records] == [_path(url)] * 3
    assert all(r.fault is None and r.error is None and r.ended is not None and r.ended >= r.started for r in records)
    assert records[1].content_range == f"bytes 1000-4999/{len(DATA)}"
    assert http_proxy.ranges_since(mark) == [(1000, 5000), (-100, None)]
    assert http_proxy.body_bytes_since(mark, path_contains="pass-") == len(DATA) + 4100
    # nginx saw exactly the same requests and sent the same bytes.
    nginx = http_server.requests_since(nginx_mark, name=url)
    assert [(r.method, r.range, r.status, r.body_bytes) for r in nginx] == expected
    assert http_proxy.errors == []


def test_keep_alive_connection_is_split_into_requests(http_proxy: HttpFaultProxy, http_server: HttpServer) -> None:
    url = http_proxy.publish_bytes(DATA, "keep.bin")
    mark, nginx_mark = http_proxy.mark(), http_server.mark()
    conn = _connection(http_proxy)
    try:
        conn.request("HEAD", _path(url))
        head = conn.getresponse()
        assert head.status == 200 and head.getheader("Content-Length") == str(len(DATA)) and head.read() == b""
        conn.request("GET", _path(url), headers={"Range": "bytes=7-70006"})
        assert conn.getresponse().read() == DATA[7:70007]
        # A chunked request body (as S3 uploads may send) must be framed, or the next request is garbled.
        conn.request("POST", _path(url), body=iter([b"abc", b"defgh" * 1000]), encode_chunked=True)
        post = conn.getresponse()
        assert post.status == 405
        post.read()
        conn.request("GET", _path(url))
        assert conn.getresponse().read() == DATA
    finally:
        conn.close()
    records = http_proxy.requests_since(mark)
    assert _summary(records) == [
        ("HEAD", None, 200, 0),
        ("GET", "bytes=7-70006", 206, 70000),
        ("POST", None, 405, records[2].body_bytes),
        ("GET", None, 200, len(DATA)),
    ]
    assert len({r.connection for r in records}) == 1
    nginx = http_server.requests_since(nginx_mark, name=url)
    assert [(r.method, r.status) for r in nginx] == [("HEAD", 200), ("GET", 206), ("POST", 405), ("GET", 200)]
    assert [r.body_bytes for r in nginx] == [r.body_bytes for r in records]
    assert len({r.connection for r in nginx}) == 1  # one upstream connection carried all four
    assert http_proxy.errors == []


def test_fsspec_http_reads_are_counted_like_nginx_counts_them(
    http_proxy: HttpFaultProxy, http_server: HttpServer
) -> None:
    url = http_proxy.publish_bytes(DATA, "fsspec.bin")
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    mark, nginx_mark = http_proxy.mark(), http_server.mark()
    assert fs.cat_file(url, start=10, end=1000) == DATA[10:1000]
    assert fs.cat_file(url, start=250_000, end=len(DATA)) == DATA[250_000:]
    assert fs.cat_file(url) == DATA
    assert (10, 1000) in http_proxy.ranges_since(mark)
    assert (250_000, len(DATA)) in http_proxy.ranges_since(mark)
    records = http_proxy.requests_since(mark, path_contains="fsspec-")
    nginx = http_server.requests_since(nginx_mark, name=url)
    assert _summary(records) == [(r.method, r.range, r.status, r.body_bytes) for r in nginx]
    assert sum(r.body_bytes for r in nginx) == http_proxy.body_bytes_since(mark)


# --------------------------------------------------------------------------- HTTP faults


def test_status_answers_without_upstream_and_counts_down(http_proxy: HttpFaultProxy, http_server: HttpServer) -> None:
    url = http_proxy.publish_bytes(DATA, "status.bin")
    fault = http_proxy.status(503, times=2, retry_after=3)
    assert http_proxy.faults == [fault]
    mark, nginx_mark = http_proxy.mark(), http_server.mark()
    for _ in range(2):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url, timeout=5)
        with caught.value as error:
            assert error.code == 503
            assert error.headers["Retry-After"] == "3"
            body = error.read()
        assert b"<Error><Code>SlowDown</Code>" in body and _path(url).encode() in body
    assert _get(http_proxy, url) == (200, DATA)
    assert fault.fired == 2 and fault.exhausted and http_proxy.faults == []
    records = http_proxy.requests_since(mark)
    assert [(r.status, r.fault) for r in records] == [(503, "status"), (503, "status"), (200, None)]
    assert records[0].body_bytes == len(body)
    # Only the last request reached nginx.
    assert [(r.status, r.body_bytes) for r in http_server.requests_since(nginx_mark, name=url)] == [(200, len(DATA))]


def test_status_to_a_client_waiting_for_continue_closes_the_connection(http_proxy: HttpFaultProxy) -> None:
    http_proxy.status(412, method="PUT")
    with socket.create_connection((http_proxy.host, http_proxy.port), timeout=5) as stream:
        stream.sendall(b"PUT /upload.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        head, body = _read_response(stream)
        assert head.startswith(b"HTTP/1.1 412 ") and b"Connection: close" in head
        assert b"<Code>PreconditionFailed</Code>" in body
        assert stream.recv(10) == b""  # the body was never sent, so the connection cannot be reused
    assert [(r.method, r.status, r.body_bytes) for r in http_proxy.log] == [("PUT", 412, len(body))]


def test_status_bodies_name_s3_error_codes(http_proxy: HttpFaultProxy) -> None:
    url = http_proxy.publish_bytes(b"x", "codes.bin")
    for code, name in [(500, "InternalError"), (412, "PreconditionFailed"), (429, "SlowDown"), (404, "NoSuchKey")]:
        http_proxy.status(code)
        status, body = _get(http_proxy, url)
        assert status == code and f"<Code>{name}</Code>".encode() in body
    http_proxy.status(500, body=b"plain")
    assert _get(http_proxy, url) == (500, b"plain")


def test_faults_fire_only_on_matching_requests(http_proxy: HttpFaultProxy) -> None:
    a = http_proxy.publish_bytes(DATA, "match-a.bin")
    b = http_proxy.publish_bytes(DATA, "match-b.bin")
    fault = http_proxy.status(500, times=None, path_contains=_path(b), ranged_only=True, method="GET")
    assert _get(http_proxy, b) == (200, DATA)  # no Range
    assert _get(http_proxy, a, "bytes=0-9") == (206, DATA[:10])  # other path
    conn = _connection(http_proxy)
    try:
        conn.request("HEAD", _path(b), headers={"Range": "bytes=0-9"})  # other method
        assert conn.getresponse().status == 206
    finally:
        conn.close()
    assert _get(http_proxy, b, "bytes=0-9")[0] == 500
    assert _get(http_proxy, b, "bytes=5-9")[0] == 500
    assert fault.fired == 2 and not fault.exhausted
    fault.cancel()
    assert _get(http_proxy, b, "bytes=5-9") == (206, DATA[5:10])
    http_proxy.status(500, times=None)
    http_proxy.clear_faults()
    assert http_proxy.faults == [] and _get(http_proxy, a)[0] == 200


def test_drop_mid_body_closes_after_the_given_bytes(http_proxy: HttpFaultProxy, http_server: HttpServer) -> None:
    url = http_proxy.publish_bytes(DATA, "drop.bin")
    http_proxy.drop_mid_body(1000, times=1)
    mark, nginx_mark = http_proxy.mark(), http_server.mark()
    conn = _connection(http_proxy)
    try:
        conn.request("GET", _path(url), headers={"Range": "bytes=0-99999"})
        response = conn.getresponse()
        assert response.status == 206 and response.getheader("Content-Length") == "100000"
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
        assert caught.value.partial == DATA[:1000]
    finally:
        conn.close()
    assert _get(http_proxy, url, "bytes=0-99999") == (206, DATA[:100_000])
    records = http_proxy.requests_since(mark)
    assert [(r.status, r.body_bytes, r.fault) for r in records] == [(206, 1000, "drop_mid_body"), (206, 100_000, None)]
    assert len(http_server.requests_since(nginx_mark, name=url)) == 2  # the dropped request did reach nginx


def test_drop_mid_body_breaks_an_fsspec_read(http_proxy: HttpFaultProxy) -> None:
    url = http_proxy.publish_bytes(DATA, "drop-fsspec.bin")
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    http_proxy.drop_mid_body(10, ranged_only=True)
    mark = http_proxy.mark()
    with pytest.raises(aiohttp.ClientPayloadError, match="received 10 of 50000 bytes"):
        fs.cat_file(url, start=0, end=50_000)
    assert [(r.status, r.body_bytes, r.fault) for r in http_proxy.requests_since(mark, method="GET")] == [
        (206, 10, "drop_mid_body")
    ]


def test_truncate_content_withholds_the_tail(http_proxy: HttpFaultProxy) -> None:
    url = http_proxy.publish_bytes(DATA, "truncate.bin")
    http_proxy.truncate_content(times=2)
    http_proxy.truncate_content(missing_bytes=5000)
    for missing in (1, 1, 5000):
        conn = _connection(http_proxy)
        try:
            conn.request("GET", _path(url))
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Content-Length") == str(len(DATA))
            with pytest.raises(http.client.IncompleteRead) as caught:
                response.read()
            assert caught.value.partial == DATA[:-missing]
        finally:
            conn.close()
    assert [(r.body_bytes, r.fault) for r in http_proxy.log[-3:]] == [
        (len(DATA) - 1, "truncate_content"),
        (len(DATA) - 1, "truncate_content"),
        (len(DATA) - 5000, "truncate_content"),
    ]
    assert _get(http_proxy, url) == (200, DATA)


def test_stall_outlasts_the_client_timeout(http_proxy: HttpFaultProxy, http_server: HttpServer) -> None:
    url = http_proxy.publish_bytes(DATA, "stall.bin")
    http_proxy.stall(5.0)
    mark, nginx_mark = http_proxy.mark(), http_server.mark()
    conn = _connection(http_proxy, timeout=0.3)
    started = time.monotonic()
    try:
        conn.request("GET", _path(url))
        with pytest.raises(TimeoutError):
            conn.getresponse()
    finally:
        conn.close()
    assert time.monotonic() - started < 2.0
    record = http_proxy.requests_since(mark)[0]
    assert (record.fault, record.status, record.body_bytes, record.ended) == ("stall", None, 0, None)
    assert len(http_server.requests_since(nginx_mark, name=url)) == 0  # never forwarded
    assert _get(http_proxy, url) == (200, DATA)  # a new connection is served meanwhile


def test_stall_after_bytes_stalls_the_body(http_proxy: HttpFaultProxy) -> None:
    url = http_proxy.publish_bytes(DATA, "stall-body.bin")
    http_proxy.stall(5.0, after_bytes=100)
    conn = _connection(http_proxy, timeout=0.3)
    try:
        conn.request("GET", _path(url))
        response = conn.getresponse()
        assert response.status == 200
        assert response.read(100) == DATA[:100]
        with pytest.raises(TimeoutError):
            response.read(1)
    finally:
        conn.close()
    record = http_proxy.log[-1]
    assert (record.fault, record.status, record.body_bytes) == ("stall", 200, 100)


def test_reset_kills_the_connection_without_forwarding(http_proxy: HttpFaultProxy, http_server: HttpServer) -> None:
    url = http_proxy.publish_bytes(DATA, "reset.bin")
    http_proxy.reset(times=1, path_contains="reset-")
    nginx_mark = http_server.mark()
    conn = _connection(http_proxy)
    try:
        conn.request("GET", _path(url))
        with pytest.raises(ConnectionResetError):
            conn.getresponse()
    finally:
        conn.close()
    assert _get(http_proxy, url) == (200, DATA)
    assert [(r.status, r.fault) for r in http_proxy.log[-2:]] == [(None, "reset"), (200, None)]
    assert [r.status for r in http_server.requests_since(nginx_mark, name=url)] == [200]


def test_ignore_range_returns_the_whole_object(http_proxy: HttpFaultProxy, http_server: HttpServer) -> None:
    url = http_proxy.publish_bytes(DATA, "ignore.bin")
    http_proxy.ignore_range(times=1)
    mark, nginx_mark = http_proxy.mark(), http_server.mark()
    assert _get(http_proxy, url) == (200, DATA)  # not ranged: does not use up the fault
    assert _get(http_proxy, url, "bytes=0-99") == (200, DATA)
    assert _get(http_proxy, url, "bytes=0-99") == (206, DATA[:100])
    records = http_proxy.requests_since(mark)
    assert [(r.range, r.status, r.body_bytes, r.fault) for r in records] == [
        (None, 200, len(DATA), None),
        ("bytes=0-99", 200, len(DATA), "ignore_range"),
        ("bytes=0-99", 206, 100, None),
    ]
    # nginx never saw the stripped Range header.
    assert [(r.range, r.status) for r in http_server.requests_since(nginx_mark, name=url)] == [
        (None, 200),
        (None, 200),
        ("bytes=0-99", 206),
    ]


def test_close_ends_stalls_and_leaves_no_thread_or_listener(http_server: HttpServer) -> None:
    url = http_server.publish_bytes(DATA, "close.bin")
    before = {t for t in threading.enumerate() if t.name.startswith("faultproxy")}  # other tests' proxies
    proxy = FaultProxy(http_server.url)
    proxy.stall(30.0)
    threads = [t for t in threading.enumerate() if t.name.startswith("faultproxy") and t not in before]
    assert len(threads) == 1
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as client:
        client.sendall(f"GET {_path(url)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        deadline = time.monotonic() + 5
        while not proxy.log and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 2.0
        assert client.recv(10) == b""  # closed without an answer
    proxy.close()  # idempotent
    assert not threads[0].is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=5).close()
    assert [(r.fault, r.status) for r in proxy.log] == [("stall", None)]
