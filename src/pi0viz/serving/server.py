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
RuntimeError); a failure inside inference gets "pi0viz server: internal error (<type>) ...": its traceback, which
names server paths, goes to the server's log only. (openpi instead
closes the connection with code 1011 after any exception.) Inference runs in a worker thread, one call at a
time across all connections, so health checks, new connections and disconnects are handled while the model
runs; a client that disconnects mid-call only loses its own reply.
"""

from __future__ import annotations

import asyncio
import http
import logging
import threading
import time
from typing import Any, Mapping, Protocol

import websockets
from websockets.asyncio.server import Request, Response, ServerConnection, serve

from pi0viz.errors import Pi0vizError
from pi0viz.errors import ProtocolError as RequestError
from pi0viz.serving import msgpack_numpy, protocol

logger = logging.getLogger(__name__)


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
    """

    def __init__(self, policy: InferencePolicy, *, host: str = "127.0.0.1", port: int = 8000,
                 metadata: Mapping[str, Any] | None = None, recorder: Any = None) -> None:
        self.policy = policy
        self.recorder = recorder
        self.host = host
        self.port = port
        self.metadata = dict(server_metadata(policy))
        self.metadata.update(metadata or {})
        self._infer_lock: asyncio.Lock | None = None
        self._server: Any = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled (or `stop()` from another thread)."""
        self._infer_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        # compression=None, max_size=None: as openpi; observations are a few hundred KB, bundles tens of MB.
        async with serve(self._handle, self.host, self.port, compression=None, max_size=None,
                         process_request=_health_check) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            self._started.set()
            await server.serve_forever()

    def serve_forever(self) -> None:
        """Blocking: serve until Ctrl-C."""
        asyncio.run(self.run())

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
                    logger.warning("bad request from %s: %s", peer, err)
                    await websocket.send(f"pi0viz server: bad request: {err}")
                    continue
                except Exception as err:  # a failing inference must not take the server down
                    # The traceback (and any server path in it) goes to the log only; the client gets a reason.
                    logger.exception("inference failed for %s", peer)
                    await websocket.send(f"pi0viz server: internal error ({type(err).__name__}) while answering "
                                         "this request; the server log has the details")
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
            except Pi0vizError as err:  # the policy's own input checks (ObservationError, ...): the client's fault
                raise RequestError(str(err)) from None
            infer_ms = (time.monotonic() - start) * 1000
        result["server_timing"] = {"infer_ms": infer_ms}
        if prev_total_ms is not None:
            result["server_timing"]["prev_total_ms"] = prev_total_ms
        # Packing a full pi0 bundle copies ~130 MB: off the event loop, so other connections stay responsive.
        return await asyncio.to_thread(msgpack_numpy.packb, result)

    def _infer(self, request: protocol.PolicyRequest) -> dict[str, Any]:
        """Run the policy (worker thread) and flatten its bundle into response arrays."""
        started = time.monotonic()
        record_index = self.recorder.next_index() if self.recorder is not None else None
        step = request.inference_step if request.inference_step is not None else record_index
        kwargs: dict[str, Any] = {"return_bundle": request.return_attention or self.recorder is not None,
                                  "inference_step": step}
        if request.return_attention and request.fuse_heads:
            kwargs["capture"] = capture_options(self.policy, fuse_heads=True)
        out = self.policy.infer(request.obs, **kwargs)
        result = {k: v for k, v in out.items() if k != "attention_bundle"}
        result.setdefault("policy_timing", {"infer_ms": (time.monotonic() - started) * 1000})
        if self.recorder is not None:
            try:
                self.recorder.record(out["attention_bundle"], record_index)
            except Pi0vizError as err:  # the robot still gets its actions; the operator sees why a call is missing
                logger.error("call %d not recorded: %s", record_index, err)
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
            "bundle_format": FORMAT,
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


def _health_check(connection: ServerConnection, request: Request) -> Response | None:
    """Answer plain-HTTP `GET /healthz` with 200 OK; every other path proceeds to the websocket handshake."""
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None
