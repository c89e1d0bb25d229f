"""The policy of a sweep, as one object a Ray actor holds: the tiny or a checkpoint JAX pi0 in process, or a
client of any `pi0viz serve` endpoint (which may sit on a GPU machine outside the Ray cluster).

Each call returns (actions, capture bundle) as two Ray objects, so an env worker fetches only the actions and
hands the bundle's reference to the attention work without ever touching its bytes.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.sweep.disk import CallShape
from pi0viz.sweep.plan import sweep_policy

# Shapes for the disk estimate, known without loading the model: the tiny pi0 has 4 layers ("dummy" Gemma),
# a checkpoint or a served policy is taken as full-size pi0 (18 layers). 10 denoising steps, 50 action tokens.
TINY_SHAPE = CallShape(steps=10, layers=4, action_tokens=50)
REACH_SHAPE = CallShape(steps=10, layers=4, action_tokens=10)  # reach-tiny: dummy Gemma, 10 action tokens
PI0_SHAPE = CallShape(steps=10, layers=18, action_tokens=50)


def expected_shape(policy: str) -> CallShape:
    """The attention shape a policy spec will produce (for the disk estimate before anything starts)."""
    return {"tiny": TINY_SHAPE, "reach-tiny": REACH_SHAPE}.get(sweep_policy(policy).kind, PI0_SHAPE)


class PolicyRunner:
    """Loads the policy once; `infer` serves one LIBERO observation with its attention capture.

    Args:
        policy: a policy spec: "tiny", "reach-tiny", "checkpoint:DIR" or "ws://HOST:PORT".
        tokenizer: PaliGemma tokenizer path for checkpoints (None: openpi's cache or the bundled one).
        all_heads: capture every head (float32); default heads max-fused on the device, float16.
        baseline: "untrained" (the reach suite's baseline: the model's config at its initial weights); others
            need no policy.
    """

    def __init__(self, policy: str, tokenizer: str | None = None, all_heads: bool = False,
                 baseline: str | None = None) -> None:
        spec = sweep_policy(policy)
        self.kind = spec.kind
        self.all_heads = all_heads
        self.client: Any = None
        self.policy: Any = None
        if spec.kind == "server":
            from pi0viz.serving.client import PolicyClient

            self.client = PolicyClient(spec.uri or "", None, connect_timeout=300)
            return
        from pi0viz.core.capture_options import CaptureOptions
        from pi0viz.policy.spec import load_policy

        self.policy = load_policy(spec, tokenizer=tokenizer)  # checkpoint:DIR of a reach-tiny run loads as one
        if baseline == "untrained":  # the reach suite's baseline: the same config and norm stats, initial weights
            from pi0viz.policy.reach_model import initial_params

            self.policy.params = initial_params(self.policy.config, 0)
            self.policy.description += " (untrained: initial weights, seed 0)"
        # Heads fused by max on the device give exactly the fused maps the store keeps, 8x less to move.
        self.capture = CaptureOptions() if all_heads else CaptureOptions(fuse_heads=True, dtype="float16")

    def describe(self) -> str:
        """One line naming the policy."""
        return self.client.uri if self.client is not None else self.policy.description

    def infer(self, obs: Mapping[str, Any], call: int, noise_seed: list[int]) -> tuple[np.ndarray, CaptureBundle]:
        """Actions float32[A, action_dims] and the call's CaptureBundle.

        In process, the initial noise is drawn from `noise_seed` (numpy SeedSequence entropy), so a call gives
        the same actions whichever worker asks and in whatever order; a server draws its own noise.
        """
        if self.client is not None:
            out = self.client.infer(obs, return_attention=True, inference_step=call, fuse_heads=not self.all_heads)
        else:
            cfg = self.policy.config
            noise = np.random.default_rng(noise_seed).standard_normal((cfg.action_horizon, cfg.action_dim))
            out = self.policy.infer(obs, capture=self.capture, inference_step=call, noise=noise.astype(np.float32))
        return np.asarray(out["actions"], np.float32), out["attention_bundle"]

    def ping(self) -> bool:
        return True
