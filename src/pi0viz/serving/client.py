"""A thin client for the pi0viz (or any openpi) policy server; numpy + msgpack + websockets, no JAX.

    client = PolicyClient("127.0.0.1", 8000)
    out = client.infer(obs, return_attention=True, inference_step=3)
    out["actions"]            # float32 [50, 7]
    out["attention_bundle"]   # CaptureBundle, rebuilt from the "attention_bundle/*" arrays

openpi's own `openpi_client.websocket_client_policy.WebsocketClientPolicy` works against the same server;
pass {"pi0viz/return_attention": True} in its observation and call
`pi0viz.serving.protocol.bundle_from_response(response)`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Mapping

from websockets.sync.client import ClientConnection, connect

from pi0viz.core.bundle import BUNDLE_PREFIX
from pi0viz.errors import ServerError
from pi0viz.serving import msgpack_numpy, protocol


class PolicyClient:
    """Blocking websocket client. Connects at construction and reads the server's metadata map.

    Args:
        host, port: the server; `host` may also be a full "ws://..." URI (then `port` is ignored if None).
        connect_timeout: seconds to keep retrying while the server is not up yet.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = 8000, *, connect_timeout: float = 60.0) -> None:
        self.uri = host if host.startswith("ws") else f"ws://{host}"
        if port is not None and not host.startswith("ws"):
            self.uri += f":{port}"
        self._stack = contextlib.ExitStack()  # websockets >= 17 wants connections opened as context managers
        self._ws, self.metadata = self._connect(connect_timeout)

    def _connect(self, timeout: float) -> tuple[ClientConnection, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ws = self._stack.enter_context(connect(self.uri, compression=None, max_size=None,
                                                       open_timeout=timeout))
                break
            except (ConnectionRefusedError, OSError):
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no policy server at {self.uri} after {timeout:.0f} s") from None
                time.sleep(0.5)
        first = ws.recv()
        if isinstance(first, str):
            self._stack.close()
            raise ServerError(f"server sent text instead of its metadata: {first[:200]}")
        return ws, msgpack_numpy.unpackb(first)

    def infer(self, obs: Mapping[str, Any], *, return_attention: bool = False, inference_step: int | None = None,
              fuse_heads: bool = False) -> dict[str, Any]:
        """Send one observation; returns the response, with "attention_bundle" rebuilt when asked for.

        fuse_heads: have the server max-fuse the heads on device (8x less data, no per-head views).
        """
        request = dict(obs)
        if return_attention:
            request[protocol.RETURN_ATTENTION_KEY] = True
            if fuse_heads:
                request[protocol.FUSE_HEADS_KEY] = True
        if inference_step is not None:
            request[protocol.INFERENCE_STEP_KEY] = int(inference_step)
        self._ws.send(msgpack_numpy.packb(request))
        reply = self._ws.recv()
        if isinstance(reply, str):
            raise ServerError(reply)
        response = msgpack_numpy.unpackb(reply)
        bundle = protocol.bundle_from_response(response)
        response = {k: v for k, v in response.items() if not (isinstance(k, str) and k.startswith(BUNDLE_PREFIX))}
        if bundle is not None:
            response["attention_bundle"] = bundle
        return response

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_server(uri: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """Connect to the policy server at `uri` ("ws://HOST:PORT"), read its metadata map, and hang up.

    For a driver that hands the address to workers (`pi0viz sweep`): a server that is not there, does not speak
    the websocket protocol or sends no metadata is found out within `timeout` seconds (per stage: connect and
    handshake, then the metadata), in one line, before any work starts.

    Returns:
        The server's metadata map.
    Raises:
        ServerError (one line) naming the address and what went wrong.
    """
    import websockets.exceptions

    try:
        with connect(uri, compression=None, max_size=1 << 20, open_timeout=timeout) as ws:  # metadata is small
            first = ws.recv(timeout=timeout)
    except TimeoutError:
        raise ServerError(f"the policy server at {uri} did not answer within {timeout:g} s; expected a running "
                          "`pi0viz serve` (or openpi) policy server there") from None
    except (OSError, websockets.exceptions.WebSocketException) as err:
        why = str(err).splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ServerError(f"no policy server at {uri} ({why}); expected a running `pi0viz serve` (or openpi) "
                          "policy server there") from None
    if isinstance(first, str):
        raise ServerError(f"{uri} sent text instead of a policy server's metadata: {first[:200]!r}")
    try:
        meta = msgpack_numpy.unpackb(first)
    except Exception:  # whatever the bytes are, they are not openpi's metadata map
        meta = None
    if not isinstance(meta, dict):
        raise ServerError(f"{uri} sent something other than a policy server's metadata map (msgpack); expected a "
                          "`pi0viz serve` (or openpi) policy server there")
    return meta
