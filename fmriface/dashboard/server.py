"""The dashboard's web server (aiohttp): the page, its assets, the live stream as Server-Sent Events, the runs.

Routes (every one behind the token when one is required):

``/``                       the page (``static/index.html``)
``/static/NAME``            its script and style sheet (packaged with the project: no CDN)
``/events``                 the live stream: ``text/event-stream``, a ``snapshot`` event first, then one event
                            per change (``frame``, ``face``, ``trial``, ``status``, ``qa``, ``end``, ``problem``,
                            ``points``, ``flips``, ``runs``, ``snapshot`` again when the run changes or the page
                            fell behind)
``/api/state``              the snapshot as JSON
``/api/runs``               the session's runs (``--runs``); ``/api/runs/RUN_ID`` one run from its records
``/stimulus/PATH``          a stimulus image from ``--stimuli`` (the trial's ``stim_id``)

Each page has a queue of its own, bounded in events and bytes: a page that reads slowly, or not at all, loses
its oldest events and is then sent the whole state again; nothing waits for it. The stream feed (its own thread)
never waits for the event loop either (:mod:`fmriface.dashboard.feed`).

Access: bound to a loopback address the server answers requests addressed to a loopback name only (a web page
elsewhere cannot reach it through DNS rebinding); bound to any other address it requires a token (printed at
start, or ``--token``/``FMRIFACE_DASHBOARD_TOKEN``), given once as ``?token=`` (it is then kept in a cookie) or as
``Authorization: Bearer``. A request without the right token gets 401 and nothing else.

Requests the HTTP parser refuses, before any route or token check: a request line (the address) over
``MAX_REQUEST_LINE`` bytes gets 414, a header line over ``MAX_HEADER_LINE`` bytes 431, anything else malformed
400; each is one log line at most per minute with the count since the last (:class:`BadRequests`), never a
traceback. A stimulus name the file system refuses (too long) is no file: 404, never 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import signal
import time
from collections import deque
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fmriface.dashboard.feed import Handoff, RecordsFeed, StreamFeed
from fmriface.dashboard.runs import list_runs, run_detail, valid_run_id
from fmriface.dashboard.state import RunState, StateConfig
from service import protocol

__all__ = ["DashboardConfig", "Dashboard", "run_dashboard", "is_loopback", "STATIC_FILES"]

log = logging.getLogger("fmriface.dashboard")

#: The page's files, served from the package (``fmriface/dashboard/static``).
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "plots.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: The longest request line (method, address, version) and header line the server reads, in bytes.
MAX_REQUEST_LINE = 8190
MAX_HEADER_LINE = 16384
#: The longest stimulus name looked up in the stimulus folder (a longer one is no file).
MAX_STIMULUS_NAME = 1024
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}
_IMAGE_TYPES.update({".gif": "image/gif", ".webp": "image/webp"})
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class DashboardConfig:
    """Options of ``fmriface dashboard`` (a TOML file with these keys, or the command line)."""

    sub: str = protocol.DEFAULT_PUB
    host: str = "127.0.0.1"
    port: int = 8050
    #: The service's runs folder: intake problems, flip acks, the run's earlier volumes, earlier runs.
    runs: Path | None = None
    #: The experiment's stimulus folder (BIDS ``stimuli/``): a trial's ``stim_id`` is a path inside it.
    stimuli: Path | None = None
    #: Required token; empty: none on a loopback address, a new random one on any other.
    token: str = ""
    require_token: bool = False
    fd_threshold: float = 0.5
    history: int = 1000
    trials_kept: int = 24
    film: int = 8
    #: Per page: events and bytes queued at most before the oldest are dropped (and the state sent again).
    client_events: int = 512
    client_bytes: int = 8 << 20
    max_clients: int = 32
    image_format: str = "png"
    curve_secret: Path | None = None
    curve_server_key: Path | None = None
    #: Stop after this many seconds (0: until Ctrl-C / SIGTERM).
    duration: float = 0.0
    #: CPU priority given up at start (``os.nice``): on the service's own machine the dashboard yields to it.
    nice: int = 10
    keepalive_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.history < 10 or self.trials_kept < 1 or self.film < 1:
            raise ValueError("history must be >= 10, trials_kept and film >= 1")
        if self.client_events < 8 or self.client_bytes < 1 << 16 or self.max_clients < 1:
            raise ValueError("client_events must be >= 8, client_bytes >= 65536, max_clients >= 1")
        if self.image_format not in ("png", "jpeg"):
            raise ValueError(f"image_format must be png or jpeg, got {self.image_format!r}")
        if (self.curve_secret is None) != (self.curve_server_key is None):
            raise ValueError("curve_secret and curve_server_key go together (this dashboard's key, the service's)")
        if self.fd_threshold <= 0:
            raise ValueError(f"fd_threshold must be positive, got {self.fd_threshold}")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"nice must be 0-19, got {self.nice}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a Host header's name) is this machine only."""
    import ipaddress

    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only "localhost" is this machine for sure
        return False


def _host_name(header: str) -> str:
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def sse(name: str, data: Any) -> bytes:
    """One Server-Sent Event (the data as one line of JSON)."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), allow_nan=False)}\n\n".encode()


class BadRequests:
    """Requests the HTTP parser refused: answered 414 (address too long), 431 (a header too long) or 400, and
    logged at most once per ``interval`` seconds per kind, with the count since the last line, never a traceback.

    Parameters
    ----------
    interval : float
        Seconds between two log lines of one kind.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.counts: dict[int, int] = {}  # every refusal, by status
        self._unlogged: dict[int, int] = {}
        self._last: dict[int, float] = {}

    def answer(self, exc: BaseException) -> tuple[int, str]:
        """The status and text for a request the parser refused with ``exc``; counted, and logged when due."""
        from aiohttp.http_exceptions import LineTooLong

        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            status = 414 if str(limit) == str(MAX_REQUEST_LINE) else 431
        else:
            status = 400
        text = {
            414: f"414: the address is longer than {MAX_REQUEST_LINE} bytes\n",
            431: f"431: a request header is longer than {MAX_HEADER_LINE} bytes\n",
        }.get(status, "400: malformed request\n")
        self.counts[status] = self.counts.get(status, 0) + 1
        self._unlogged[status] = self._unlogged.get(status, 0) + 1
        now = time.monotonic()
        if now - self._last.get(status, -1e18) >= self.interval:
            n, self._unlogged[status] = self._unlogged[status], 0
            self._last[status] = now
            log.warning("refused %d request%s with %s (%s)", n, "" if n == 1 else "s", text.strip(), type(exc).__name__)
        return status, text

    def attach(self, server: Any) -> None:
        """Answer the parser's refusals on every connection ``server`` (an ``aiohttp.web.Server``) takes.

        aiohttp answers them itself, 400 with a logged traceback, in its connection's ``handle_error``; each
        connection is made a subclass that answers them here (same slots: only the method differs), as it is
        made. Any other error (a handler's exception: 500) keeps aiohttp's answer."""
        made = server.connection_made
        classes: dict[type, type] = {}

        def connection_made(handler: Any, transport: Any) -> None:
            base = type(handler)
            try:
                if base not in classes:
                    classes[base] = self._handler_class(base)
                handler.__class__ = classes[base]
            except TypeError:  # another aiohttp's layout: its own answers (400), the connection served all the same
                pass
            made(handler, transport)

        server.connection_made = connection_made

    def _handler_class(self, base: type) -> type:
        from aiohttp import web
        from aiohttp.http_exceptions import HttpProcessingError

        bad = self

        class Refusing(base):  # type: ignore[misc, valid-type]
            __slots__ = ()

            def handle_error(
                self, request: Any, status: int = 500, exc: BaseException | None = None, message: Any = None
            ) -> Any:
                if not isinstance(exc, HttpProcessingError):
                    return super().handle_error(request, status, exc, message)
                code, text = bad.answer(exc)
                resp = web.Response(status=code, text=text, headers={"Cache-Control": "no-store"})
                resp.force_close()
                return resp

        return Refusing


class Client:
    """One connected page's queue: at most ``max_events`` events and ``max_bytes`` bytes; past that the oldest
    go and the page is sent the whole state next (``resync``)."""

    def __init__(self, max_events: int, max_bytes: int, peer: str = "") -> None:
        self.q: deque[bytes] = deque()
        self.bytes = 0
        self.max_events, self.max_bytes = max_events, max_bytes
        self.wake = asyncio.Event()
        self.resync = False
        self.closed = False
        self.dropped = 0
        self.sent = 0
        self.peer = peer

    def put(self, chunk: bytes) -> None:
        if self.closed:
            return
        self.q.append(chunk)
        self.bytes += len(chunk)
        while self.q and (len(self.q) > self.max_events or self.bytes > self.max_bytes):
            self.bytes -= len(self.q.popleft())
            self.dropped += 1
            self.resync = True
        self.wake.set()

    def take(self) -> bytes:
        chunks = list(self.q)
        self.q.clear()
        self.bytes = 0
        self.wake.clear()
        return b"".join(chunks)

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class Dashboard:
    """The state, the connected pages and the feeds of one dashboard process."""

    def __init__(self, cfg: DashboardConfig) -> None:
        self.cfg = cfg
        self.token = ""
        if cfg.token or cfg.require_token or not is_loopback(cfg.host):
            self.token = cfg.token or os.environ.get("FMRIFACE_DASHBOARD_TOKEN", "") or secrets.token_urlsafe(24)
        self.stimuli = Path(cfg.stimuli).resolve() if cfg.stimuli is not None else None
        self._stim_cache: dict[str, str | None] = {}
        info = {
            "sub": cfg.sub,
            "curve": cfg.curve_secret is not None,
            "runs": str(cfg.runs) if cfg.runs is not None else None,
            "stimuli": self.stimuli is not None,
            "token": bool(self.token),
            "started": time.time(),
            "pid": os.getpid(),
        }
        scfg = StateConfig(cfg.history, cfg.fd_threshold, cfg.trials_kept, cfg.film)
        self.state = RunState(scfg, self.stimulus_url, info)
        self.clients: set[Client] = set()
        self.stats = {"clients_served": 0, "client_drops": 0, "handoff_dropped": 0, "events": 0, "unencodable": 0}
        self.stream: StreamFeed | None = None
        self.records: RecordsFeed | None = None
        self.url = ""
        self._face_timer: Any = None
        self.bad_requests = BadRequests()

    # --- stimuli ------------------------------------------------------------------------------------------

    def stimulus_file(self, stim_id: str) -> Path | None:
        """The image file of ``stim_id`` inside the stimulus folder, or None (outside it, not an image, or missing)."""
        if self.stimuli is None or not stim_id or "\x00" in stim_id or len(stim_id) > MAX_STIMULUS_NAME:
            return None
        try:
            path = (self.stimuli / stim_id).resolve()
            if not path.is_relative_to(self.stimuli) or path.suffix.lower() not in _IMAGE_TYPES or not path.is_file():
                return None
        except (OSError, ValueError):  # a name the file system refuses: too long, a component over its limit
            return None
        return path

    def stimulus_url(self, stim_id: str) -> str | None:
        """The page's address of ``stim_id``'s image, or None when there is none (answers are cached)."""
        if len(stim_id) > MAX_STIMULUS_NAME:
            return None
        if stim_id not in self._stim_cache:
            if len(self._stim_cache) > 4096:
                self._stim_cache.clear()
            found = self.stimulus_file(stim_id)
            self._stim_cache[stim_id] = None if found is None else "/stimulus/" + quote(stim_id)
        return self._stim_cache[stim_id]

    # --- items in, events out -------------------------------------------------------------------------------

    def deliver(self, items: list[dict[str, Any]], dropped: int) -> None:
        """Apply items (on the loop) and queue their events for every page."""
        chunks = []
        for item in items:
            for name, data in self.state.apply(item):
                if name in ("end", "snapshot") and self.records is not None:
                    self.records.poke.set()  # the runs' list changes with a run's start and end
                try:
                    chunks.append(sse(name, data))
                except (TypeError, ValueError):
                    self.stats["unencodable"] += 1
        if dropped:
            self.stats["handoff_dropped"] += dropped
            chunks = [sse("snapshot", self.state.snapshot())]
        self._broadcast(chunks)
        if self.state.pending_face is not None and self._face_timer is None:
            loop = asyncio.get_running_loop()
            self._face_timer = loop.call_later(StreamFeed.FACE_PERIOD, self._flush_face)

    def _broadcast(self, chunks: list[bytes]) -> None:
        self.stats["events"] += len(chunks)
        for client in self.clients:
            for chunk in chunks:
                client.put(chunk)

    def _flush_face(self) -> None:
        """Send the newest face a burst held back (encoded here, on the loop: at most 20 a second)."""
        from fmriface.dashboard.state import encode_image

        self._face_timer = None
        events = self.state.flush_face(lambda raw: encode_image(raw, self.cfg.image_format))
        self._broadcast([sse(name, data) for name, data in events])

    def current_run(self) -> str | None:
        """The run id of the stream's current run (what the records feed follows)."""
        return self.state.run_id

    # --- the web app --------------------------------------------------------------------------------------

    def app(self) -> Any:
        """The web application: the page and its static files, the event stream, the state and runs API and the stimuli.

        Every request passes the token guard; every response gets the security headers.
        """
        from aiohttp import web

        static = resources.files("fmriface.dashboard").joinpath("static")
        files = {name: static.joinpath(name).read_bytes() for name in STATIC_FILES}
        cookie = f"fmriface_dashboard_{self.cfg.port or 'any'}"

        @web.middleware
        async def guard(request: Any, handler: Any) -> Any:
            return await self._guarded(request, handler, cookie, web)

        async def headers(request: Any, resp: Any) -> None:
            resp.headers.setdefault("Content-Security-Policy", _CSP)
            resp.headers.setdefault("X-Content-Type-Options", "nosniff")
            resp.headers.setdefault("Referrer-Policy", "no-referrer")
            resp.headers.setdefault("Cache-Control", "no-store")

        async def page(request: Any) -> Any:
            return web.Response(body=files["index.html"], content_type="text/html", charset="utf-8")

        async def asset(request: Any) -> Any:
            name = request.match_info["name"]
            if name not in files or name == "index.html":
                raise web.HTTPNotFound()
            ctype, _, charset = STATIC_FILES[name].partition("; charset=")
            return web.Response(body=files[name], content_type=ctype, charset=charset or None)

        async def state(request: Any) -> Any:
            return web.json_response(self.state.snapshot(), dumps=_dumps)

        async def runs(request: Any) -> Any:
            found = await asyncio.get_running_loop().run_in_executor(None, list_runs, self.cfg.runs)
            return web.json_response({"runs": found, "root": self.state.info["runs"]}, dumps=_dumps)

        async def one_run(request: Any) -> Any:
            run_id = request.match_info["run_id"]
            if self.cfg.runs is None or not valid_run_id(run_id):
                raise web.HTTPNotFound()
            detail = await asyncio.get_running_loop().run_in_executor(None, run_detail, self.cfg.runs, run_id)
            if detail is None:
                raise web.HTTPNotFound()
            return web.json_response(detail, dumps=_dumps)

        async def stimulus(request: Any) -> Any:
            path = self.stimulus_file(request.match_info["path"])
            if path is None:
                raise web.HTTPNotFound()
            return web.FileResponse(path, headers={"Content-Type": _IMAGE_TYPES[path.suffix.lower()]})

        app = web.Application(middlewares=[guard])
        app.on_response_prepare.append(headers)
        app.router.add_get("/", page)
        app.router.add_get("/static/{name}", asset)
        app.router.add_get("/events", self.events)
        app.router.add_get("/api/state", state)
        app.router.add_get("/api/runs", runs)
        app.router.add_get("/api/runs/{run_id}", one_run)
        app.router.add_get("/stimulus/{path:.+}", stimulus)
        return app

    async def _guarded(self, request: Any, handler: Any, cookie: str, web: Any) -> Any:
        if not self.token:
            if not is_loopback(_host_name(request.host or "")):
                return web.Response(status=403, text="403: this dashboard answers on its loopback address only\n")
            return await handler(request)
        given = request.query.get("token")
        auth = request.headers.get("Authorization", "")
        candidates = [given, request.cookies.get(cookie), auth[7:] if auth.startswith("Bearer ") else None]
        if not any(c and hmac.compare_digest(c.encode(), self.token.encode()) for c in candidates):
            return web.Response(
                status=401,
                text="401: this dashboard needs its token: open the address `fmriface dashboard` printed\n",
                headers={"WWW-Authenticate": 'Bearer realm="fmriface dashboard"'},
            )
        if given and request.path == "/":  # keep the token in a cookie, out of the address bar and history
            resp = web.Response(status=303, headers={"Location": "/"})
            resp.set_cookie(cookie, self.token, httponly=True, samesite="Strict", path="/")
            return resp
        return await handler(request)

    async def events(self, request: Any) -> Any:
        """Stream events to one page (Server-Sent Events): a snapshot, then its queue (a snapshot again on overflow)."""
        from aiohttp import web

        if len(self.clients) >= self.cfg.max_clients:
            return web.Response(status=503, text=f"503: {self.cfg.max_clients} pages are connected already\n")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        client = Client(self.cfg.client_events, self.cfg.client_bytes, request.remote or "")
        self.clients.add(client)
        self.stats["clients_served"] += 1
        try:
            await resp.write(b"retry: 1000\n\n" + sse("snapshot", self.state.snapshot()))
            while not client.closed:
                if client.resync:
                    client.resync = False
                    self.stats["client_drops"] += 1
                    client.take()
                    chunk = sse("snapshot", self.state.snapshot())
                elif client.q:
                    chunk = client.take()
                else:
                    try:
                        await asyncio.wait_for(client.wake.wait(), self.cfg.keepalive_s)
                    except asyncio.TimeoutError:
                        chunk = b": keepalive\n\n"
                    else:
                        continue
                await resp.write(chunk)
                client.sent += 1
        except (ConnectionError, asyncio.CancelledError, RuntimeError):
            pass
        finally:
            client.close()
            self.clients.discard(client)
        return resp

    # --- running ----------------------------------------------------------------------------------------------

    async def serve(self, announce: Any = None) -> dict[str, Any]:
        """Run until stopped (SIGINT/SIGTERM, ``duration``, or the stream feed failing); returns a summary."""
        from aiohttp import web

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        if self.cfg.nice and hasattr(os, "nice"):
            os.nice(self.cfg.nice)  # the service comes first on a shared machine (threads started later inherit it)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        cfg = self.cfg
        curve = None if cfg.curve_secret is None else protocol.CurveKeys.load(cfg.curve_secret, cfg.curve_server_key)
        handoff = Handoff(loop, self.deliver)
        runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            max_line_size=MAX_REQUEST_LINE,
            max_field_size=MAX_HEADER_LINE,
        )
        await runner.setup()
        self.bad_requests.attach(runner.server)
        site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else cfg.port
        self.stream = StreamFeed(cfg.sub, handoff, curve=curve, image_format=cfg.image_format)
        self.stream.start()
        if cfg.runs is not None:
            self.records = RecordsFeed(Path(cfg.runs), self.current_run, handoff)
            self.records.start()
        self.url = self._url(port)
        t0 = time.monotonic()
        if announce is not None:
            announce(self.announcement(port))
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
                if self.stream.error is not None or (cfg.duration and time.monotonic() - t0 >= cfg.duration):
                    break
        finally:
            self.stream.stop()
            if self.records is not None:
                self.records.stop()
            for client in list(self.clients):
                client.close()
            await asyncio.sleep(0.05)
            await runner.cleanup()
            self.stream.join(5)
            if self.records is not None:
                self.records.join(5)
        if self.stream.error is not None:
            raise self.stream.error
        c = self.state.counts
        return {
            "url": self.url.split("?", 1)[0],
            "run_id": self.state.run_id,
            "messages_received": self.stream.received,
            "frames": c["frames"],
            "malformed": c["malformed"],
            "uptime_s": round(time.monotonic() - t0, 3),
            "bad_requests": {str(k): v for k, v in sorted(self.bad_requests.counts.items())},
            **self.stats,
        }

    def _url(self, port: int) -> str:
        host = self.cfg.host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")

    def announcement(self, port: int) -> list[str]:
        """The lines printed once the dashboard listens: its address, binding, subscription, token and runs folder."""
        cfg = self.cfg
        link = "CurveZMQ" if cfg.curve_secret is not None else "plain TCP"
        lines = [f"fmriface dashboard: {self.url}"]
        lines.append(f"  bound to {cfg.host}:{port}; subscribed to {cfg.sub} ({link})")
        if self.token:
            why = "as asked" if is_loopback(cfg.host) else f"bound beyond this host ({cfg.host})"
            lines.append(f"  a token is required ({why}): open the address above; without the token: 401, nothing")
        else:
            lines.append("  loopback only: no token needed (bind another address with --host and a token is required)")
        lines.append(f"  run records: {cfg.runs}" if cfg.runs is not None else "  run records: none (--runs DIR)")
        return lines


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def run_dashboard(cfg: DashboardConfig, announce: Any = None) -> dict[str, Any]:
    """Run the dashboard in this thread until stopped; ``announce(lines)`` is called once it listens."""
    return asyncio.run(Dashboard(cfg).serve(announce))
