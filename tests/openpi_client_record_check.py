"""Run in the openpi-client environment (.venv-client) by tests/test_serving_record.py: openpi's own, unmodified
client talks to `pi0viz serve --record`, the way openpi's LIBERO example would (no pi0viz import here at all).

    .venv-client/bin/python tests/openpi_client_record_check.py --port PORT --obs OBS.npz --calls N --out OUT.npz

OBS.npz holds one LIBERO observation (observation/image, observation/wrist_image, observation/state, prompt);
OUT.npz gets the actions of each call (actions_0, actions_1, ...) and the metadata's action horizon.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--obs", required=True)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = np.load(args.obs, allow_pickle=False)
    obs = {k: data[k] for k in ("observation/image", "observation/wrist_image", "observation/state")}
    obs["prompt"] = str(data["prompt"])
    client = WebsocketClientPolicy(host="127.0.0.1", port=args.port)
    out = {"action_horizon": np.int64(client.get_server_metadata()["action_horizon"])}
    for i in range(args.calls):
        reply = client.infer(obs)
        assert not any(k.startswith("attention_bundle") for k in reply), sorted(reply)  # the client asked nothing
        out[f"actions_{i}"] = reply["actions"]
    assert "pi0viz" not in sys.modules
    np.savez(args.out, **out)


if __name__ == "__main__":
    main()
