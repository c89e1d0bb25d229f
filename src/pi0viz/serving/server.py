"""A websocket policy server speaking openpi's protocol, with attention on request.

Protocol (the same bytes as openpi's WebsocketPolicyServer, so `openpi_client.WebsocketClientPolicy` works):
- on connect the server sends one msgpack-numpy map: the metadata;
- then, per request: a binary frame with a msgpack-numpy observation dict -> a binary frame with
  {"actions": float32[A, action_dims], "policy_timing": {"infer_ms"}, "server_timing": {"infer_ms"[, "prev_total_ms"]}}
  plus, if the request set "pi0viz/return_attention", the capture bundle as "attention_bundle/*" arrays
  (see pi0viz.serving.protocol);
- `GET /healthz` over plain HTTP -> 200 "OK".

With a `CallRecorder` (`pi0viz serve --record DIR`) every call is captured and its bundle written on the
server, whatever the client asked: an unmodified openpi client gets plain actions, the attention lands in DIR.

Errors are per request and the connection stays open for the next one: a malformed message or observation gets
a one-line TEXT frame "pi0viz server: bad request: <what was expected>" (what openpi's client raises as
RuntimeError); a failure inside inference (including a policy that produces non-finite actions) gets
"pi0viz server: internal error: (<type>) ... not of the request ...": its traceback, which names server paths, goes
to the server's log only. Every error text is at most `MAX_ERROR_CHARS` characters (`error_text`). (openpi instead
closes the connection with code 1011 after any exception.)

Nobody else in: a frame larger than `max_message_bytes(policy)` is refused from its header with close code 1009
(never read whole); a handshake whose Origin header is not a loopback page (or one of `allowed_origins`) is
refused with 403, so a web page from another site cannot drive the robot; clients without an Origin header
(openpi's client, pi0viz's) are not browsers and are let in. Inference runs in a worker thread, one call at a
time across all connections, so health checks, new connections and disconnects are handled while the model
runs; a client that disconnects mid-call only loses its own reply.
"""

from __future__ import annotations

import asyncio
import http
import logging
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable, Mapping, Protocol

import websockets
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from pi0viz.errors import ObservationError, Pi0vizError
from pi0viz.errors import ProtocolError as RequestError
from pi0viz.serving import msgpack_numpy, protocol

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300  # every error text a client gets (a request with 200,000 keys must not get them all back)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# The largest observation a policy can sensibly take, per camera slot: a float32 image at twice the model's
# 224 x 224 input (raw camera frames are resized on the server). LIBERO sends 2 x uint8 224 x 224 = 0.3 MB.
MAX_IMAGE_BYTES = (2 * 224) ** 2 * 3 * 4
PROMPT_BYTES = 64 * 1024
MESSAGE_HEADROOM = 2


def max_message_bytes(policy: Any) -> int:
    """The request size limit for `policy`, from what an observation can be: every camera slot of its config (3 when
    it does not say) as a float32 image of 448 x 448, the state (`config.action_dim` float64 values, 32 when not
    said), a 64 KiB prompt and 64 KiB for msgpack and the pi0viz/ options; x2 headroom, rounded up to a MiB.
    pi0 / pi0.5 LIBERO: 15 MiB (a LIBERO observation is 0.3 MB)."""
    config = getattr(policy, "config", None)
    cameras = len(getattr(config, "image_keys", ()) or ()) or 3
    state = int(getattr(config, "action_dim", 32) or 32) * 8
    body = cameras * MAX_IMAGE_BYTES + state + PROMPT_BYTES + 64 * 1024
    mib = 2**20
    return -(-body * MESSAGE_HEADROOM // mib) * mib


def error_text(kind: str, detail: str) -> str:
    """The one text frame a client gets for a failed request: "pi0viz server: <kind>: <detail>", one line, at most
    MAX_ERROR_CHARS characters (longer details end in "...")."""
    text = " ".join(f"pi0viz server: {kind}: {detail}".split())  # one line whatever the detail holds
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


def origin_allowed(origin: str, allowed: Iterable[str] = ()) -> bool:
    """True for a page served from a loopback name (http(s)://127.0.0.1|localhost|[::1][:port]) or an origin in
    `allowed` (exact, as `normalize_origin` writes it). "null" (file:// pages, sandboxed frames) only when allowed."""
    normal = normalize_origin(origin)
    if normal is None:
        return False
    if normal in set(allowed):
        return True
    parts = urllib.parse.urlsplit(normal)
    return parts.scheme in ("http", "https") and parts.hostname in LOOPBACK_NAMES


def normalize_origin(origin: str) -> str | None:
    """An Origin value as `scheme://host[:port]` in lower case ("null" stays "null"); None when it is not one."""
    text = origin.strip().lower()
    if text == "null":
        return text
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query \
            or parts.fragment or parts.username or parts.password:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


class InferencePolicy(Protocol):
    """What the server needs from a policy (pi0viz.policy.jax_policy.Policy has this)."""

    def infer(self, obs: Mapping[str, Any], *, return_bundle: bool = False, inference_step: int | None = None,
              capture: Any = None) -> dict[str, Any]: ...



class PolicyServer:
    """Serve `policy` over websockets on host:port (port 0 = any free port; see `.port` once started).

    Args:
        policy: object with `infer(obs, *, return_bundle, inference_step) -> {"actions", ...}`.
        host: interface to bind; loopback by default (the server runs no authentication).
        port: TCP port.
        metadata: extra entries for the metadata map sent on connect.
        recorder: optional `CallRecorder`: every call's bundle is written server-side.
        allowed_origins: browser origins let in besides loopback pages (`scheme://host[:port]` or "null").
        max_message: request size limit in bytes (default `max_message_bytes(policy)`).
    """

    def __init__(self, policy: InferencePolicy, *, host: str = "127.0.0.1", port: int = 8000,
                 metadata: Mapping[str, Any] | None = None, recorder: Any = None,
                 allowed_origins: Iterable[str] = (), max_message: int | None = None) -> None:
        self.policy = policy
        self.recorder = recorder
        self.host = host
        self.port = port
        self.allowed_origins = tuple(o for o in map(normalize_origin, allowed_origins) if o is not None)
        self.max_message = max_message if max_message is not None else max_message_bytes(policy)
        self.metadata = dict(server_metadata(policy))
        self.metadata.update(metadata or {})
        self._infer_lock: asyncio.Lock | None = None
        self._server: Any = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def run(self, on_ready: Callable[["PolicyServer"], None] | None = None) -> None:
        """Serve until cancelled (or `stop()` from another thread); `on_ready(self)` once the port is bound."""
        self._infer_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        # compression=None as openpi. max_size: requests are observations (a few hundred KB); a larger frame is
        # refused from its header (close 1009) before its payload is read. Replies (bundles, tens of MB) are ours.
        async with serve(self._handle, self.host, self.port, compression=None, max_size=self.max_message,
                         process_request=self._process_request) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]  # the real port, also for --port 0
            self._started.set()
            if on_ready is not None:
                on_ready(self)
            await server.serve_forever()

    def serve_forever(self, on_ready: Callable[["PolicyServer"], None] | None = None) -> None:
        """Blocking: serve until Ctrl-C; `on_ready(self)` once bound (`self.port` is then the real port)."""
        asyncio.run(self.run(on_ready))

    def start_in_thread(self, timeout: float = 30.0) -> threading.Thread:
        """Start serving on a daemon thread (tests, notebooks); returns once the port is bound.

        Raises OSError when the address cannot be bound (e.g. the port is taken).
        """
        failure: list[BaseException] = []

        def target() -> None:
            try:
                self.serve_forever()
            except BaseException as err:  # surface bind errors in the caller's thread
                failure.append(err)
                self._started.set()

        thread = threading.Thread(target=target, name="pi0viz-policy-server", daemon=True)
        thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"policy server did not start on {self.host}:{self.port} within {timeout} s")
        if failure:
            raise failure[0]
        return thread

    def stop(self) -> None:
        """Close the listening socket and all connections (thread-safe)."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the handshake: refuse a browser page from another site (403), answer `GET /healthz` with 200 OK;
        every other request proceeds to the websocket handshake."""
        origins = request.headers.get_all("Origin")
        if len(origins) > 1 or (origins and not origin_allowed(origins[0], self.allowed_origins)):
            shown = ", ".join(origins)[:80]
            logger.warning("refused a connection from %s with Origin %r", connection.remote_address, shown)
            return connection.respond(http.HTTPStatus.FORBIDDEN, error_text(
                "refused", f"Origin {shown!r} is not a loopback page; a web page from another site may not drive "
                "this policy (pi0viz serve --allow-origin ORIGIN lets one in)") + "\n")
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None

    # -- one connection ------------------------------------------------------------------------------------

    async def _handle(self, websocket: ServerConnection) -> None:
        peer = websocket.remote_address
        logger.info("connection from %s opened", peer)
        try:
            await websocket.send(msgpack_numpy.packb(self.metadata))
            prev_total_ms: float | None = None
            async for message in websocket:
                start = time.monotonic()
                try:
                    reply = await self._answer(message, prev_total_ms)
                except RequestError as err:
                    reply_text = error_text("bad request", str(err))
                    logger.warning("bad request from %s: %s", peer, reply_text)
                    await websocket.send(reply_text)
                    continue
                except Exception as err:  # a failing inference must not take the server down
                    # The traceback (and any server path in it) goes to the log only; the client gets a reason.
                    logger.exception("inference failed for %s", peer)
                    await websocket.send(error_text("internal error", f"({type(err).__name__}) while answering "
                                                    "this request: a fault of the server or its policy, not of the "
                                                    "request; the server log has the details"))
                    continue
                await websocket.send(reply)
                prev_total_ms = (time.monotonic() - start) * 1000
        except websockets.ConnectionClosed:
            pass  # the client went away, possibly mid-call; its reply is simply dropped
        logger.info("connection from %s closed", peer)

    async def _answer(self, message: str | bytes, prev_total_ms: float | None) -> bytes:
        """One request frame -> the packed response frame. Raises RequestError for client mistakes."""
        if isinstance(message, str):
            raise RequestError("expected a binary frame holding one msgpack map (the observation, openpi's "
                               "msgpack-numpy), got a text frame")
        try:
            decoded = msgpack_numpy.unpackb(message)
        except ValueError as err:  # MsgpackNumpyError is a ValueError
            raise RequestError(f"expected one msgpack map (the observation, openpi's msgpack-numpy): {err}") from None
        try:
            request = protocol.split_request(decoded)
        except ValueError as err:
            raise RequestError(str(err)) from None
        assert self._infer_lock is not None, "run() sets the lock before serving"
        async with self._infer_lock:
            start = time.monotonic()
            try:
                result = await asyncio.to_thread(self._infer, request)
            except ObservationError as err:  # the policy's own input checks: the client's fault
                raise RequestError(str(err)) from None
            # Anything else (PolicyOutputError: non-finite actions, a checkpoint fault, ...) is the server's.
            infer_ms = (time.monotonic() - start) * 1000
        result["server_timing"] = {"infer_ms": infer_ms}
        if prev_total_ms is not None:
            result["server_timing"]["prev_total_ms"] = prev_total_ms
        # Packing a full pi0 bundle copies ~130 MB: off the event loop, so other connections stay responsive.
        return await asyncio.to_thread(msgpack_numpy.packb, result)

    def _infer(self, request: protocol.PolicyRequest) -> dict[str, Any]:
        """Run the policy (worker thread) and flatten its bundle into response arrays."""
        started = time.monotonic()
        recording = self.recorder is not None and self.recorder.stopped is None
        # The number this call gets if it is recorded; calls run one at a time (the infer lock), and a call that
        # fails takes no number, so the recorded calls have no gaps.
        record_index = self.recorder.next_index() if recording else None
        step = request.inference_step if request.inference_step is not None else record_index
        kwargs: dict[str, Any] = {"return_bundle": request.return_attention or recording, "inference_step": step}
        if request.return_attention and request.fuse_heads:
            kwargs["capture"] = capture_options(self.policy, fuse_heads=True)
        out = self.policy.infer(request.obs, **kwargs)
        result = {k: v for k, v in out.items() if k != "attention_bundle"}
        result.setdefault("policy_timing", {"infer_ms": (time.monotonic() - started) * 1000})
        if recording:
            try:
                self.recorder.record(out["attention_bundle"], record_index, observation=request.obs)
            except Pi0vizError as err:  # the robot still gets its actions; the operator sees why a call is missing
                logger.error("recording call %d: %s", record_index, err)
        if request.return_attention:
            result.update(protocol.bundle_to_response(out["attention_bundle"]))
        return result


def capture_options(policy: Any, **kwargs: Any) -> Any:
    """Capture options for the policy: its own `capture_options` if it has one, else pi0viz.core's CaptureOptions
    (which every backend takes; no backend is imported)."""
    from pi0viz.core.capture_options import CaptureOptions

    make = getattr(policy, "capture_options", None) or CaptureOptions
    return make(**kwargs)


def server_metadata(policy: Any) -> dict[str, Any]:
    """The metadata map sent on connect: what is served and how to ask for attention."""
    from pi0viz import FORMAT, __version__

    meta: dict[str, Any] = {
        "server": f"pi0viz {__version__}",
        "policy": getattr(policy, "description", type(policy).__name__),
        "attention": {
            "request_key": protocol.RETURN_ATTENTION_KEY,
            "inference_step_key": protocol.INFERENCE_STEP_KEY,
            "fuse_heads_key": protocol.FUSE_HEADS_KEY,
            "response_prefix": protocol.BUNDLE_PREFIX,
            "bundle_format": getattr(policy, "bundle_format", FORMAT),  # pi0-FAST: pi0viz.capture/2
        },
    }
    config = getattr(policy, "config", None)
    if config is not None and hasattr(config, "action_horizon"):
        meta["action_horizon"] = int(config.action_horizon)
    # docs/architecture.md's vocabulary: action_dims = the robot's action width the replies carry (LIBERO: 7);
    # action_dim = the model's padded state/action vector (pi0: 32), sent only when the policy knows it.
    if hasattr(policy, "action_dims"):
        meta["action_dims"] = int(policy.action_dims)
    if config is not None and hasattr(config, "action_dim"):
        meta["action_dim"] = int(config.action_dim)
    return meta
