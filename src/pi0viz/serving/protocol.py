"""What pi0viz adds to openpi's policy-server protocol: attention on request. numpy-only (no JAX, no websockets),
so a client in an openpi-client environment (numpy < 2) can rebuild the capture bundle.

Request: the usual observation dict, plus optionally
    "pi0viz/return_attention": True   -> the response also carries the call's capture bundle
    "pi0viz/inference_step": int      -> stored in the bundle as its `inference_step` (index in the episode)
Keys starting with "pi0viz/" are removed before the observation reaches the policy.

Response: openpi's {"actions", "policy_timing", "server_timing"} plus, when asked, every array of
`CaptureBundle.to_arrays()` under a flat key "attention_bundle/<name>" (e.g. "attention_bundle/attention").
Attention probabilities travel as float16 (bfloat16 has no msgpack-numpy encoding; float16 keeps ~3 significant
digits for values in [0, 1]); pre-softmax scores ("logits") stay float32, since their mask value overflows float16.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from pi0viz.bundle import BUNDLE_PREFIX, CaptureBundle

RETURN_ATTENTION_KEY = "pi0viz/return_attention"
INFERENCE_STEP_KEY = "pi0viz/inference_step"
REQUEST_PREFIX = "pi0viz/"


def split_request(request: Mapping[str, Any]) -> tuple[dict[str, Any], bool, int | None]:
    """A decoded request -> (observation for the policy, attention wanted?, inference step or None).

    Raises ValueError when the request is not a map with str keys or the pi0viz options have wrong types.
    """
    if not isinstance(request, Mapping):
        raise ValueError(f"a request must be a msgpack map (observation dict), got {type(request).__name__}")
    bad = [k for k in request if not isinstance(k, str)]
    if bad:
        raise ValueError(f"request keys must be strings, got {bad[:3]!r}")
    obs = {k: v for k, v in request.items() if not k.startswith(REQUEST_PREFIX)}
    want = request.get(RETURN_ATTENTION_KEY, False)
    if not isinstance(want, (bool, np.bool_)):
        raise ValueError(f"{RETURN_ATTENTION_KEY!r} must be true or false, got {want!r}")
    step = request.get(INFERENCE_STEP_KEY)
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer))):
        raise ValueError(f"{INFERENCE_STEP_KEY!r} must be an integer, got {step!r}")
    return obs, bool(want), None if step is None else int(step)


def bundle_to_response(bundle: CaptureBundle) -> dict[str, np.ndarray]:
    """The bundle as flat response entries {"attention_bundle/<name>": ndarray}, attention probs as float16."""
    arrays = bundle.to_arrays()
    if bundle.attention_kind == "probs":
        arrays["attention"] = arrays["attention"].astype(np.float16)
    return {BUNDLE_PREFIX + name: np.asarray(value) for name, value in arrays.items()}


def bundle_from_response(response: Mapping[str, Any]) -> CaptureBundle | None:
    """Rebuild (and validate) the capture bundle carried by a policy response; None when it carries none.

    Works on the dict that openpi_client's `WebsocketClientPolicy.infer` returns. Raises BundleError when the
    arrays are there but inconsistent.
    """
    arrays = {k[len(BUNDLE_PREFIX) :]: v for k, v in response.items() if isinstance(k, str) and k.startswith(BUNDLE_PREFIX)}
    if not arrays:
        return None
    # msgpack-numpy gives read-only views on the received bytes; copies make the bundle an ordinary one.
    return CaptureBundle.from_arrays({k: np.array(v) for k, v in arrays.items()})
