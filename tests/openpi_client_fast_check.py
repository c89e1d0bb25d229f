"""Run in the openpi-client environment (.venv-client: numpy<2, no JAX) by tests/test_fast_serving.py.

    .venv-client/bin/python tests/openpi_client_fast_check.py --port PORT --out DIR

openpi's own `WebsocketClientPolicy`, unchanged, against a pi0viz server running pi0-FAST: reads the metadata, asks
for actions, then for actions + attention, and rebuilds the decoding bundle with pi0viz's numpy-only helper.
Writes DIR/summary.json (what it saw) and DIR/bundle.npz (the rebuilt decoding bundle).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from openpi_client.websocket_client_policy import WebsocketClientPolicy

from pi0viz.core.decode_bundle import DecodeBundle, save_decode_bundle
from pi0viz.policy.libero_frames import load_libero_frames
from pi0viz.serving.protocol import RETURN_ATTENTION_KEY, bundle_from_response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    client = WebsocketClientPolicy(host="127.0.0.1", port=args.port)
    frame = load_libero_frames()[0]
    obs = frame.observation()
    plain = client.infer(obs)
    with_attention = client.infer({**obs, RETURN_ATTENTION_KEY: True})
    bundle = bundle_from_response(with_attention)
    save_decode_bundle(bundle, args.out / "bundle.npz")
    summary = {
        "jax_imported": "jax" in sys.modules,
        "metadata": client.get_server_metadata(),
        "plain_keys": sorted(plain),
        "plain_actions": [list(plain["actions"].shape), plain["actions"].dtype.str],
        "plain_actions_values": plain["actions"].tolist(),
        "attention_actions_values": with_attention["actions"].tolist(),
        "bundle_is_decoding": isinstance(bundle, DecodeBundle),
        "attention_dtype": with_attention["attention_bundle/attention"].dtype.str,
        "bundle_attention_shape": list(bundle.attention.shape),
        "bundle_prompt": str(bundle.prompt[0]),
        "generated_ids": bundle.generated_ids[0].tolist(),
    }
    (args.out / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
