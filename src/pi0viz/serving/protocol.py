"""What pi0viz adds to openpi's policy-server protocol: attention on request. numpy-only (no JAX, no websockets),
so a client in an openpi-client environment (numpy < 2) can rebuild the capture bundle.

Request: the usual observation dict, plus optionally
    "pi0viz/return_attention": True   -> the response also carries the call's capture bundle
    "pi0viz/inference_step": int      -> stored in the bundle as its `inference_step` (index in the episode)
    "pi0viz/fuse_heads": True         -> heads fused by max on the device (K = G = 1): 8x less data for pi0,
                                         exactly the "fused" maps the renderer draws, but no per-head views
Keys starting with "pi0viz/" are removed before the observation reaches the policy.

Response: openpi's {"actions", "policy_timing", "server_timing"} plus, when asked, every array of
`CaptureBundle.to_arrays()` under a flat key "attention_bundle/<name>" (e.g. "attention_bundle/attention").
A pi0-FAST policy's bundle is a DecodeBundle: the same keys carry its arrays, and "attention_bundle/format" says
which ("pi0viz.capture/1": denoising, CaptureBundle; "pi0viz.capture/2": decoding, DecodeBundle); the server's
metadata names it too ("attention"."bundle_format").
Attention probabilities travel as float16 (bfloat16 has no msgpack-numpy encoding; float16 keeps ~3 significant
digits for values in [0, 1]); pre-softmax scores ("logits") stay float32, since their mask value overflows float16.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from pi0viz.core.bundle import BUNDLE_PREFIX, INT32_MAX, CaptureBundle
from pi0viz.core.decode_bundle import DECODE_FORMAT, DecodeBundle

RETURN_ATTENTION_KEY = "pi0viz/return_attention"
INFERENCE_STEP_KEY = "pi0viz/inference_step"
FUSE_HEADS_KEY = "pi0viz/fuse_heads"
REQUEST_PREFIX = "pi0viz/"


@dataclasses.dataclass
class PolicyRequest:
    """A decoded request split into the policy's observation and pi0viz's options."""

    obs: dict[str, Any]
    return_attention: bool = False
    inference_step: int | None = None
    fuse_heads: bool = False


def split_request(request: Mapping[str, Any]) -> PolicyRequest:
    """A decoded request -> the observation for the policy plus the pi0viz options.

    Raises ValueError when the request is not a map with str keys, an option has the wrong type, or an unknown
    "pi0viz/" key is present (a typo would otherwise silently drop the attention).
    """
    if not isinstance(request, Mapping):
        raise ValueError(f"expected one msgpack map (the observation dict), got a value of type {type(request).__name__}")
    bad = [k for k in request if not isinstance(k, str)]
    if bad:
        raise ValueError(f"request keys must be strings, got {bad[:3]!r}")
    known = {RETURN_ATTENTION_KEY, INFERENCE_STEP_KEY, FUSE_HEADS_KEY}
    unknown = sorted(k for k in request if k.startswith(REQUEST_PREFIX) and k not in known)
    if unknown:
        raise ValueError(f"unknown request options {unknown}; this server knows {sorted(known)}")
    obs = {k: v for k, v in request.items() if not k.startswith(REQUEST_PREFIX)}
    flags = {}
    for key in (RETURN_ATTENTION_KEY, FUSE_HEADS_KEY):
        value = request.get(key, False)
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{key!r} must be true or false, got {value!r}")
        flags[key] = bool(value)
    step = request.get(INFERENCE_STEP_KEY)
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer))
                             or not 0 <= int(step) <= INT32_MAX):  # stored as int32, names a folder
        raise ValueError(f"{INFERENCE_STEP_KEY!r} must be an integer in 0..{INT32_MAX}, got {step!r:.40}")
    return PolicyRequest(obs=obs, return_attention=flags[RETURN_ATTENTION_KEY],
                         inference_step=None if step is None else int(step), fuse_heads=flags[FUSE_HEADS_KEY])


def bundle_to_response(bundle: CaptureBundle | DecodeBundle) -> dict[str, np.ndarray]:
    """The bundle as flat response entries {"attention_bundle/<name>": ndarray}, attention probs as float16 (a
    DecodeBundle always holds probabilities)."""
    arrays = bundle.to_arrays()
    if getattr(bundle, "attention_kind", "probs") == "probs":
        arrays["attention"] = arrays["attention"].astype(np.float16)
    return {BUNDLE_PREFIX + name: np.asarray(value) for name, value in arrays.items()}


def bundle_from_response(response: Mapping[str, Any]) -> CaptureBundle | DecodeBundle | None:
    """Rebuild (and validate) the bundle carried by a policy response: a CaptureBundle, or a DecodeBundle when its
    "format" is pi0viz.capture/2 (pi0-FAST); None when it carries none.

    Works on the dict that openpi_client's `WebsocketClientPolicy.infer` returns. Raises BundleError when the
    arrays are there but inconsistent.
    """
    n = len(BUNDLE_PREFIX)
    arrays = {k[n:]: v for k, v in response.items() if isinstance(k, str) and k.startswith(BUNDLE_PREFIX)}
    if not arrays:
        return None
    # msgpack-numpy gives read-only views on the received bytes; copies make the bundle an ordinary one.
    arrays = {k: np.array(v) for k, v in arrays.items()}
    if "format" in arrays and arrays["format"].ndim == 0 and str(arrays["format"]) == DECODE_FORMAT:
        return DecodeBundle.from_arrays(arrays)
    return CaptureBundle.from_arrays(arrays)
