"""openpi's websocket policy protocol, plus attention on request.

- `msgpack_numpy`: the wire format (numpy arrays inside msgpack; no pickle).
- `protocol`: the request option and the "attention_bundle/*" response arrays; numpy-only.
- `server.PolicyServer`: the server (`pi0viz serve`); `client.PolicyClient`: a thin client.
Submodules are imported on use, so a numpy<2 client environment can use `protocol` without JAX.
"""
