"""Run in the openpi-client environment (.venv-client: numpy<2, no JAX) by tests/test_serving_server.py.

    .venv-client/bin/python tests/openpi_client_check.py --port PORT --out DIR

Uses openpi's own `WebsocketClientPolicy` unchanged against a pi0viz server: reads the metadata, asks for
actions, then for actions + attention, and rebuilds the capture bundle with pi0viz's numpy-only helper.
Writes DIR/summary.json (what it saw), DIR/bundle.npz (the rebuilt bundle), and DIR/openpi_packed.bin (bytes
packed by openpi-client's msgpack_numpy, for the parent test to decode with pi0viz's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from openpi_client import msgpack_numpy as openpi_msgpack
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from pi0viz.core.bundle import save_bundle
from pi0viz.policy.libero_frames import load_libero_frames
from pi0viz.serving.protocol import RETURN_ATTENTION_KEY, bundle_from_response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    assert "jax" not in sys.modules
    client = WebsocketClientPolicy(host="127.0.0.1", port=args.port)
    frame = load_libero_frames()[0]
    obs = frame.observation()

    plain = client.infer(obs)
    with_attention = client.infer({**obs, RETURN_ATTENTION_KEY: True})
    bundle = bundle_from_response(with_attention)
    save_bundle(bundle, args.out / "bundle.npz")

    summary = {
        "numpy": np.__version__,
        "jax_imported": "jax" in sys.modules,
        "metadata": client.get_server_metadata(),
        "plain_keys": sorted(plain),
        "plain_actions": [list(plain["actions"].shape), plain["actions"].dtype.str],
        "server_timing": sorted(plain["server_timing"]),
        "attention_keys": sorted(k for k in with_attention if k.startswith("attention_bundle/")),
        "attention_dtype": with_attention["attention_bundle/attention"].dtype.str,
        "bundle_attention_shape": list(bundle.attention.shape),
        "bundle_prompt": str(bundle.prompt[0]),
        "bundle_images_equal_frame": bool(np.array_equal(bundle.images[0, 0], frame.image)
                                          and np.array_equal(bundle.images[0, 1], frame.wrist_image)),
    }
    (args.out / "summary.json").write_text(json.dumps(summary))
    sample = {"f16": np.linspace(0, 1, 5, dtype=np.float16), "u8": np.arange(6, dtype=np.uint8).reshape(2, 3),
              "s": np.array(["ab", "c"]), "b": np.array([True, False]), "scalar": np.int16(-3)}
    (args.out / "openpi_packed.bin").write_bytes(openpi_msgpack.packb(sample))


if __name__ == "__main__":
    main()
