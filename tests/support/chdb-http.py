#!/usr/bin/env python3
"""Test double of ClickHouse's HTTP interface over a real, modern ClickHouse engine (chDB).

TEST-ONLY. This is not part of event-ingest and never ships with it: no modern
`clickhouse-server` installs on the test machines, so `make test` runs the integration
suite a second time against this endpoint (see scripts/chdb.sh and docs/testing.md).
Only the HTTP layer is imitated; every query, insert, type, setting, error code
and MergeTree behaviour (deduplication included) is the real engine's, from PyPI's
`chdb-core` running in this process on one session with its data under --path.

What it implements, as a ClickHouse server does (the part the service and its tests use):
- `GET/POST /ping` and `GET /` answer `Ok.`;
- `GET/POST /` run the query given in the `query` URL parameter and/or the body. For an
  `INSERT ... FORMAT X` named in the URL, the body is the data (chunked or sized), byte for
  byte; with `decompress=1` the body is ClickHouse's compressed block framing (16-byte
  checksum, method byte, sizes, block), LZ4 or none;
- `database` (the query's current database), `query_id` (echoed in
  `X-ClickHouse-Query-Id`), `default_format`, `param_NAME` (query parameters), and any other
  URL parameter as a setting of that query only: the engine validates its name and value
  (an unknown one is `Code: 115`), and every setting the request changed is reset after it;
- errors: a non-200 status (ClickHouse's mapping of codes to statuses), the
  `X-ClickHouse-Exception-Code` header, and `Code: N. DB::Exception: ... (version V)`;
- the version (`SELECT version()`, `X-ClickHouse-Server-Display-Name`) is the engine's.

Where it differs from a server: requests are serialised onto the one session (a lock);
there is no `system.processes` entry for a running query, no `system.query_log`, no
asynchronous insert queue that outlives a request, no users or passwords (any are
accepted), no `session_id` sessions, and response bodies are never compressed (a server
with `enable_http_compression=0` behaves the same). A compressed block's checksum
(CityHash128 v1.0.2, tests/support/cityhash102.py) and sizes are checked as a server checks them.

Standard library only, plus `chdb`. The data of an insert is written to a file as it arrives and
read with `INSERT ... FROM INFILE`: chDB's streaming-insert API reports success and stores
nothing when a DEFAULT or MATERIALIZED expression fails.

    chdb-http.py --host 127.0.0.1 --port 8124 --path data/chdb/db
"""

import argparse
import json
import os
import re
import signal
import struct
import sys
import tempfile
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb

import cityhash102  # beside this script

# URL parameters that are not settings (ClickHouse's HTTPHandler reserves the same names).
RESERVED = {
    "query", "database", "default_format", "query_id", "decompress", "compress", "user",
    "password", "quota_key", "session_id", "session_timeout", "session_check",
    "buffer_size", "wait_end_of_query", "role", "stacktrace", "client_protocol_version",
    "close_session",
}

# ClickHouse's exceptionCodeToHTTPStatus, by error name (chDB's messages end with it).
STATUS_BY_NAME = {
    HTTPStatus.FORBIDDEN: {"ACCESS_DENIED", "READONLY", "SET_NON_GRANTED_ROLE"},
    HTTPStatus.UNAUTHORIZED: {
        "UNKNOWN_USER", "WRONG_PASSWORD", "REQUIRED_PASSWORD", "AUTHENTICATION_FAILED",
    },
    HTTPStatus.BAD_REQUEST: {
        "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "UNKNOWN_ELEMENT_IN_AST",
        "UNKNOWN_TYPE_OF_AST_NODE", "TOO_DEEP_AST", "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE",
        "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH", "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        "CANNOT_READ_ALL_DATA", "ATTEMPT_TO_READ_AFTER_EOF", "INCORRECT_QUERY",
    },
    HTTPStatus.NOT_FOUND: {
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
        "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_FORMAT",
        "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY",
        "UNKNOWN_DIRECTION_OF_SORTING",
    },
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: {"QUERY_IS_TOO_LARGE"},
    HTTPStatus.NOT_IMPLEMENTED: {"NOT_IMPLEMENTED"},
    HTTPStatus.SERVICE_UNAVAILABLE: {"SOCKET_TIMEOUT", "CANNOT_OPEN_FILE"},
}

# `INSERT INTO t (...) [SETTINGS ...] FORMAT Name` with the data after it.
INSERT_FORMAT = re.compile(r"^\s*(INSERT\b.*?)\bFORMAT\s+([A-Za-z0-9_]+)[ \t]*\r?\n?(.*)$",
                           re.IGNORECASE | re.DOTALL)
ERROR_CODE = re.compile(r"Code: (\d+)\.")
ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*$")

# Compressed block framing: checksum(16) + method(1) + compressed size(4) + size(4).
METHOD_NONE, METHOD_LZ4 = 0x02, 0x82
FRAME_HEADER = 9


class ClickHouseError(Exception):
    """An error with ClickHouse's code and text (`Code: N. DB::Exception: ...`)."""

    def __init__(self, code, name, message):
        super().__init__(message)
        self.code, self.name = code, name


def engine_error(exc, version):
    """Turns a chDB exception into ClickHouse's error (its text is the engine's own)."""
    text = str(exc)
    start = text.find("Code: ")
    text = text[start:] if start >= 0 else f"Code: 1000. DB::Exception: {text}"
    text = text.strip()
    if "(version " not in text:
        text += f" (version {version})"
    code = int(ERROR_CODE.search(text).group(1)) if ERROR_CODE.search(text) else 1000
    name = ERROR_NAME.search(text)
    return ClickHouseError(code, name.group(1) if name else "", text)


def protocol_error(code, name, message, version):
    """An error the HTTP layer raises itself, worded as the server words it."""
    return ClickHouseError(code, name, f"Code: {code}. DB::Exception: {message}. ({name}) "
                                       f"(version {version})")


def http_status(error):
    for status, names in STATUS_BY_NAME.items():
        if error.name in names:
            return status
    if error.name.startswith("CANNOT_PARSE"):
        return HTTPStatus.BAD_REQUEST
    return HTTPStatus.INTERNAL_SERVER_ERROR


def lz4_block_decompress(src, size):
    """Decodes one raw LZ4 block (the format ClickHouse's LZ4 codec writes) of `size` bytes."""
    out = bytearray()
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        literals = token >> 4
        if literals == 15:
            while True:
                b = src[i]
                i += 1
                literals += b
                if b != 255:
                    break
        out += src[i:i + literals]
        i += literals
        if i >= n:
            break  # the last sequence has literals only
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        if offset == 0 or offset > len(out):
            raise ValueError(f"LZ4 offset {offset} outside the {len(out)} bytes decoded")
        length = token & 15
        if length == 15:
            while True:
                b = src[i]
                i += 1
                length += b
                if b != 255:
                    break
        length += 4
        start = len(out) - offset
        if offset >= length:
            out += out[start:start + length]
        else:  # overlapping copy: the last `offset` bytes repeat
            pattern = bytes(out[start:])
            out += (pattern * (length // offset + 1))[:length]
    if len(out) != size:
        raise ValueError(f"LZ4 block decoded to {len(out)} bytes, its header says {size}")
    return bytes(out)


class Unframer:
    """Turns a stream of compressed blocks (the `decompress=1` body) back into the data."""

    def __init__(self, version):
        self.pending = bytearray()
        self.version = version

    def feed(self, data):
        """Adds body bytes; returns the data of every block now complete."""
        self.pending += data
        out = []
        while len(self.pending) >= 16 + FRAME_HEADER:
            method, compressed, size = struct.unpack_from("<BII", self.pending, 16)
            total = 16 + compressed
            if compressed < FRAME_HEADER:
                raise self.error(f"compressed block size {compressed} is too small")
            if len(self.pending) < total:
                break
            expected = bytes(self.pending[:16])
            framed = bytes(self.pending[16:total])
            del self.pending[:total]
            if cityhash102.checksum(framed) != expected:
                raise protocol_error(
                    40, "CHECKSUM_DOESNT_MATCH",
                    f"Checksum doesn't match: corrupted data. Reference: {expected.hex()}. "
                    f"Actual: {cityhash102.checksum(framed).hex()}. Size of compressed block: "
                    f"{compressed}", self.version)
            block = framed[FRAME_HEADER:]
            if method == METHOD_LZ4:
                try:
                    out.append(lz4_block_decompress(block, size))
                except (ValueError, IndexError) as e:
                    raise self.error(f"cannot decompress: {e}") from None
            elif method == METHOD_NONE:
                out.append(block)
            else:
                raise protocol_error(
                    271, "CANNOT_DECOMPRESS",
                    f"Unknown compression method: {method:#x} (this test double knows LZ4 "
                    "and none)", self.version)
        return out

    def finish(self):
        if self.pending:
            raise self.error(f"{len(self.pending)} bytes after the last complete block")

    def error(self, message):
        return protocol_error(271, "CANNOT_DECOMPRESS", message, self.version)


class Engine:
    """One chDB session; requests take turns on it."""

    def __init__(self, path):
        self.conn = chdb.connect(path)
        # Insert bodies wait here for the engine (beside its data, not inside it).
        self.tmp = os.path.join(os.path.dirname(os.path.abspath(path)), "http-bodies")
        os.makedirs(self.tmp, exist_ok=True)
        self.lock = threading.Lock()
        self.version = self.conn.query("SELECT version()", "TabSeparated").bytes().decode().strip()
        self.baseline = self.changed_settings()

    def changed_settings(self):
        rows = self.conn.query("SELECT name, value FROM system.settings WHERE changed",
                               "TabSeparated").bytes().decode()
        return dict(line.split("\t", 1) for line in rows.splitlines() if line)

    def reset(self):
        """Undoes what a request changed: its settings (URL or `SET`) and database."""
        self.conn.query("USE default")
        for name, value in self.changed_settings().items():
            if self.baseline.get(name) != value:
                if name in self.baseline:
                    self.conn.query(f"SET {name} = {quote(self.baseline[name])}")
                else:
                    self.conn.query(f"SET {name} = DEFAULT")

    def run(self, request):
        """Runs one request; returns (body bytes, summary dict)."""
        with self.lock:
            try:
                if request.database:
                    self.conn.query(f"USE {ident(request.database)}")
                for name, value in request.settings:
                    self.conn.query(f"SET {ident(name)} = {quote(value)}")
                if request.insert is not None:
                    return self.insert(request)
                result = self.conn.query(request.sql, request.format, params=request.params)
                return result.bytes(), {
                    "read_rows": result.rows_read(), "read_bytes": result.bytes_read(),
                    "written_rows": result.rows_written(),
                    "written_bytes": result.bytes_written(),
                }
            except ClickHouseError:
                raise
            except Exception as e:  # chDB raises its errors as RuntimeError/ChdbError
                raise engine_error(e, self.version) from None
            finally:
                self.reset()

    def insert(self, request):
        statement, fmt, path = request.insert
        # `FROM INFILE` goes before a SETTINGS clause of the statement, if it has one.
        head, sep, tail = (re.split(r"(\bSETTINGS\b)", statement, maxsplit=1, flags=re.I)
                           + ["", ""])[:3]
        sql = f"{head.rstrip()} FROM INFILE {quote(path)} {sep}{tail} FORMAT {fmt}"
        result = self.conn.query(sql, "TabSeparated")
        return b"", {"written_rows": result.rows_written(), "written_bytes": result.bytes_written()}


def ident(name):
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
    return name


def quote(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Request:
    """What one HTTP request asks the engine to do."""

    def __init__(self):
        self.sql = ""
        self.format = "TabSeparated"
        self.database = None
        self.settings = []
        self.params = {}
        self.cleanup = None  # a temporary file to remove afterwards
        self.insert = None  # (statement, format, file holding the data)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-test-double"
    engine = None  # set in main

    def log_message(self, fmt, *args):  # one line per request would flood test logs
        pass

    def do_GET(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def handle_request(self):
        self._body_started = self._body_done = False  # one handler serves a whole connection
        url = urlsplit(self.path)
        if url.path in ("/ping", "/") and not url.query and self.command == "GET":
            return self.reply(HTTPStatus.OK, b"Ok.\n")
        if url.path not in ("/", ""):
            return self.reply(HTTPStatus.NOT_FOUND, b"There is no handle " + url.path.encode())
        query_id, request = str(uuid.uuid4()), None
        try:
            params = parse_qsl(url.query, keep_blank_values=True)
            query_id = dict(params).get("query_id") or query_id
            request = Request()
            self.parse(request, params)
            body, summary = self.engine.run(request)
        except ClickHouseError as e:
            self.drain()  # or close the connection if the body was only partly read
            return self.reply(http_status(e), (str(e) + "\n").encode(), {
                "X-ClickHouse-Exception-Code": str(e.code), "X-ClickHouse-Query-Id": query_id,
            })
        finally:
            if request is not None and request.cleanup:
                os.unlink(request.cleanup)
        self.reply(HTTPStatus.OK, body, {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Format": request.format,
            "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in summary.items()}),
        })

    def parse(self, request, params):
        url_query, decompress = None, False
        for name, value in params:
            if name == "query":
                url_query = value
            elif name == "database":
                request.database = value
            elif name == "default_format":
                request.format = value
            elif name == "decompress":
                decompress = value not in ("", "0")
            elif name.startswith("param_"):
                request.params[name[len("param_"):]] = value
            elif name not in RESERVED:
                request.settings.append((name, value))
        version = self.engine.version
        unframer = Unframer(version) if decompress else None
        insert = INSERT_FORMAT.match(url_query) if url_query is not None else None
        if insert:
            # The data is written to a file as it arrives, outside the lock, then read by the
            # engine with `INSERT ... FROM INFILE`: chDB's streaming-insert API reports success
            # when a DEFAULT or MATERIALIZED expression fails, and stores nothing.
            statement, fmt, inline = insert.groups()
            request.sql = statement
            spool = tempfile.NamedTemporaryFile(dir=self.engine.tmp, suffix=".data", delete=False)
            request.cleanup = spool.name
            with spool:
                spool.write(inline.encode())
                for piece in self.body_pieces():
                    for data in unframer.feed(piece) if unframer else [piece]:
                        spool.write(data)
                if unframer:
                    unframer.finish()
            request.insert = (statement.strip(), fmt, spool.name)
            return request
        body = b"".join(self.body_pieces())
        if unframer:
            body = b"".join(unframer.feed(body))
            unframer.finish()
        text = body.decode("utf-8", errors="surrogateescape")
        request.sql = text if url_query is None else (url_query + ("\n" + text if text else ""))
        if not request.sql.strip():
            raise protocol_error(62, "SYNTAX_ERROR", "Empty query", version)
        return request

    def body_pieces(self):
        """The request body as it arrives, sized or chunked; each piece read only once."""
        if getattr(self, "_body_started", False):
            if not getattr(self, "_body_done", False):
                self.close_connection = True  # stopped mid-body: the rest is unread
            return
        self._body_started = True
        yield from self._read_body()
        self._body_done = True

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline(3)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                piece = self.rfile.read(min(left, 1 << 20))
                if not piece:
                    return
                left -= len(piece)
                yield piece

    def drain(self):
        """Reads what is left of a refused request's body, so the connection stays usable."""
        try:
            for _ in self.body_pieces():
                pass
        except (OSError, ValueError):
            self.close_connection = True

    def reply(self, status, body, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb-http")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting; nothing to tell it


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8124)
    parser.add_argument("--path", required=True, help="the engine's data folder")
    args = parser.parse_args()
    Handler.engine = Engine(args.path)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    # SIGTERM stops serving and closes the engine (its parts are on disk), as a server does.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"chdb-http: ClickHouse {Handler.engine.version} (chDB {chdb.__version__}) on "
          f"http://{args.host}:{args.port}, data in {args.path}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        Handler.engine.conn.close()


if __name__ == "__main__":
    main()
