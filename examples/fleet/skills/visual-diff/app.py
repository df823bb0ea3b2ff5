#!/usr/bin/env python3
"""visual-diff: compares two tiny "screenshots" (grids of colours) and flags off-palette colours.

One of the five skills of cutover's Quick-start fleet (examples/fleet). Standard library only.
Listens on $HOST:$PORT (HOST default 127.0.0.1; 0.0.0.0 in a container) with HTTP/1.1 keep-alive, writes one access-log line per request
to stdout (LOG_LEVEL=warning silences it), and on SIGTERM stops accepting, lets in-flight
requests finish and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import parse_qs, urlsplit

NAME = "visual-diff"
DESCRIPTION = "Compares two grids of colours and flags colours that are not design tokens."
DEFAULT_PORT = 8084
HERE = Path(__file__).resolve().parent
MAX_BODY = 1 << 20  # bytes; a larger request body is refused with 413
GRACE_SECONDS = 10.0  # how long SIGTERM waits for in-flight requests

try:
    import palette  # vendored into the release by the build step (see cutover.toml)
except ImportError:  # the working tree, where checks and tests run: the project's shared copy
    sys.path.append(str(HERE.parent.parent / "shared"))
    import palette


def read_version() -> str:
    """The VERSION file beside this file, else the cutover release id, else "dev"."""
    try:
        return (HERE / "VERSION").read_text(encoding="utf-8").strip()
    except OSError:
        return os.environ.get("CUTOVER_RELEASE", "dev")


VERSION = read_version()


# --- the skill -------------------------------------------------------------------------------

MAX_CELLS = 10_000  # a "screenshot" here is a grid of at most this many hex colours
MAX_LISTED = 100  # cells listed in a reply; the counts cover them all


def grid(value: object, name: str) -> list[list[str]]:
    """`value` as a non-empty rectangular grid of hex colours; BadRequest otherwise."""
    if not (isinstance(value, list) and value and all(isinstance(row, list) and row for row in value)):
        raise BadRequest(f"{name} must be a non-empty list of non-empty rows of hex colours")
    if len({len(row) for row in value}) != 1:
        raise BadRequest(f"{name} rows must all have the same length")
    if len(value) * len(value[0]) > MAX_CELLS:
        raise BadRequest(f"{name} has more than {MAX_CELLS} cells", 413)
    for r, row in enumerate(value):
        for c, color in enumerate(row):
            try:
                palette.hex_to_rgb(color)
            except ValueError as err:
                raise BadRequest(f"{name}[{r}][{c}]: {err}") from None
    return value


def compare(before: list[list[str]], after: list[list[str]], tolerance: float) -> dict[str, object]:
    """Cells that changed by more than `tolerance`, and cells of `after` that are off the palette."""
    changed: list[list[int]] = []
    off_palette: list[dict[str, object]] = []
    tokens = {value.lower() for value in palette.COLORS.values()}
    for r, (old_row, new_row) in enumerate(zip(before, after)):
        for c, (old, new) in enumerate(zip(old_row, new_row)):
            if palette.distance(old, new) > tolerance:
                changed.append([r, c])
            if new.lower() not in tokens:
                name, dist = palette.nearest(new)
                off_palette.append({"cell": [r, c], "color": new, "nearest": name, "distance": round(dist, 2)})
    total = len(after) * len(after[0])
    return {
        "height": len(after),
        "width": len(after[0]),
        "changed": len(changed),
        "ratio": round(len(changed) / total, 4),
        "changed_cells": changed[:MAX_LISTED],
        "off_palette_count": len(off_palette),
        "off_palette": off_palette[:MAX_LISTED],
    }


def api_diff(req: Request) -> Reply:
    """POST /api/diff {"before": grid, "after": grid, "tolerance": 0}: what changed between them."""
    body = req.json()
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object {"before": [[...]], "after": [[...]]}')
    before, after = grid(body.get("before"), "before"), grid(body.get("after"), "after")
    if (len(before), len(before[0])) != (len(after), len(after[0])):
        raise BadRequest(f"before is {len(before[0])}x{len(before)} but after is {len(after[0])}x{len(after)}")
    tolerance = body.get("tolerance", 0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise BadRequest("tolerance must be a number >= 0 (an RGB distance, 0 to 442)")
    return Reply(200, compare(before, after, float(tolerance)))


# --- endpoints every skill has ---------------------------------------------------------------


def health(_req: Request) -> Reply:
    """GET /health: liveness and readiness."""
    return Reply(200, {"status": "healthy"})


def metadata(_req: Request) -> Reply:
    """GET /: what this service is."""
    return Reply(
        200,
        {
            "name": NAME,
            "version": VERSION,
            "release": os.environ.get("CUTOVER_RELEASE"),
            "description": DESCRIPTION,
            "docs": "/docs",
        },
    )


def docs(_req: Request) -> Reply:
    """GET /docs: the endpoints, as JSON."""
    endpoints = []
    for path, methods in ROUTES.items():
        for method, route in methods.items():
            endpoint = {"method": method, "path": path, "summary": route.summary}
            if route.example is not None:
                endpoint["example"] = route.example
            endpoints.append(endpoint)
    return Reply(200, {"name": NAME, "version": VERSION, "description": DESCRIPTION, "endpoints": endpoints})


# --- HTTP plumbing ---------------------------------------------------------------------------


class BadRequest(Exception):
    """A request this service cannot act on; answered with `status` and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Request(NamedTuple):
    """What a route handler sees of a request."""

    query: dict[str, list[str]]
    body: bytes

    def json(self) -> object:
        """The body parsed as JSON; BadRequest when it is not."""
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadRequest(f"invalid JSON body: {err}") from None


class Reply(NamedTuple):
    """A handler's answer: a dict or list is sent as JSON, a str as `content_type`."""

    status: int
    body: object
    content_type: str = "application/json"


class Route(NamedTuple):
    """A handler, the line /docs shows for it, and an example request body."""

    handler: Callable[[Request], Reply]
    summary: str
    example: object = None


ROUTES: dict[str, dict[str, Route]] = {
    "/health": {"GET": Route(health, 'liveness and readiness: {"status": "healthy"}')},
    "/": {"GET": Route(metadata, "name, version, release and description")},
    "/docs": {"GET": Route(docs, "this list")},
    "/api/diff": {
        "POST": Route(
            api_diff,
            'compare two grids of hex colours {"before", "after", "tolerance"}; flags off-palette colours',
            {"before": [["#ffffff", "#1f6feb"]], "after": [["#ffffff", "#2f7ffb"]], "tolerance": 0},
        )
    },
}


class Handler(BaseHTTPRequestHandler):
    """Routes requests through ROUTES: 404 for unknown paths, 405 (with Allow) for wrong methods."""

    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = f"{NAME}/{VERSION}"
    disable_nagle_algorithm = True  # headers and body go out in two writes: don't delay the second
    server: Server

    def version_string(self) -> str:
        return self.server_version  # the Server header, without Python's version

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        with self.server.in_flight():
            self.dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def dispatch(self) -> None:
        try:
            body = self.read_body()
        except BadRequest as err:
            self.close_connection = True  # the body's framing is unknown: don't reuse the connection
            self.reply(Reply(err.status, {"error": str(err)}))
            return
        url = urlsplit(self.path)
        methods = ROUTES.get(url.path)
        if methods is None:
            self.reply(Reply(404, {"error": "not found", "path": url.path}))
            return
        allow = sorted({*methods, *(["HEAD"] if "GET" in methods else []), "OPTIONS"})
        if self.command == "OPTIONS":
            self.reply(Reply(204, ""), {"Allow": ", ".join(allow)})
            return
        route = methods.get("GET" if self.command == "HEAD" else self.command)
        if route is None:
            error = {"error": "method not allowed", "method": self.command, "allow": allow}
            self.reply(Reply(405, error), {"Allow": ", ".join(allow)})
            return
        try:
            reply = route.handler(Request(parse_qs(url.query), body))
        except BadRequest as err:
            reply = Reply(err.status, {"error": str(err)})
        except Exception:  # a bug: answer 500, keep serving, and say where on stderr
            traceback.print_exc()
            reply = Reply(500, {"error": "internal server error"})
        self.reply(reply)

    def read_body(self) -> bytes:
        """The request body (Content-Length or chunked), at most MAX_BODY bytes."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            raise BadRequest(f"invalid Content-Length: {length!r}")
        if int(length) > MAX_BODY:
            raise BadRequest(f"request body over {MAX_BODY} bytes", 413)
        return self.rfile.read(int(length))

    def read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("invalid chunk size") from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                raise BadRequest(f"request body over {MAX_BODY} bytes", 413)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF after the chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields
        return b"".join(chunks)

    def reply(self, reply: Reply, headers: dict[str, str] | None = None) -> None:
        if isinstance(reply.body, (dict, list)):
            data, content_type = json.dumps(reply.body).encode(), "application/json"
        else:
            data, content_type = str(reply.body).encode(), f"{reply.content_type}; charset=utf-8"
        self.send_response(reply.status)
        if reply.status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection or self.server.draining:
            self.send_header("Connection", "close")  # also sets close_connection
        elif self.request_version == "HTTP/1.0":
            self.send_header("Connection", "keep-alive")  # a 1.0 client asked for it
        self.end_headers()
        if self.command != "HEAD" and reply.status != 204:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base signature)
        if self.server.access_log:
            sys.stdout.write(f"{NAME} {self.address_string()} {format % args}\n")
            sys.stdout.flush()


class Server(ThreadingHTTPServer):
    """A threading HTTP server that counts in-flight requests so SIGTERM can wait for them."""

    daemon_threads = True  # idle keep-alive connections must not keep the process alive

    def __init__(self, port: int, access_log: bool) -> None:
        super().__init__((os.environ.get("HOST", "127.0.0.1"), port), Handler)
        self.access_log = access_log
        self.draining = False
        self._idle = threading.Condition()
        self._in_flight = 0

    @contextmanager
    def in_flight(self):
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight; False when `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


def make_server(port: int, access_log: bool = True) -> Server:
    """A server bound to 127.0.0.1:`port` (0 picks a free port), not yet serving."""
    return Server(port, access_log)


def main() -> int:
    try:
        port = int(os.environ.get("PORT", DEFAULT_PORT))
    except ValueError:
        print(f"{NAME}: PORT must be a number, got {os.environ['PORT']!r}", file=sys.stderr)
        return 2
    access_log = os.environ.get("LOG_LEVEL", "info").lower() in ("debug", "info")
    try:
        server = make_server(port, access_log)
    except OSError as err:
        print(f"{NAME}: cannot listen on 127.0.0.1:{port}: {err}", file=sys.stderr)
        return 1

    def stop(signum: int, _frame: object) -> None:
        if not server.draining:
            server.draining = True
            print(f"{NAME} got {signal.Signals(signum).name}, shutting down", flush=True)
            # shutdown() waits for serve_forever() to return, which runs on this very thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{NAME} {VERSION} listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.1)
    if not server.drain(GRACE_SECONDS):
        print(f"{NAME}: requests still in flight after {GRACE_SECONDS}s, exiting anyway", file=sys.stderr)
    server.server_close()
    print(f"{NAME} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
