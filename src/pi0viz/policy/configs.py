"""Named policy configs: one table, the facts of openpi's training configs that inference depends on.

    name          model                               norm      delta  discrete state  prompt slots  horizon
    pi0_libero    pi0  (gemma_2b + gemma_300m)        z-score   yes    -               48            50
    pi05_libero   pi0.5                               quantile  no     off             200           10
    pi0_base      pi0                                 z-score   no     -               48            50
    pi05_base     pi0.5                               quantile  no     on              200           50

Every config has a tiny variant (`tiny_model_config`): the same pipeline and token layout around openpi's tiny
model shape (dummy Gemma experts, SigLIP mu/14, float32), for offline demos and tests with random weights.
Cameras, image masks and the output slice (7 dims) are LIBERO's for every config (pi0viz's policy wing speaks
LIBERO's observation keys); the base configs name no norm-stats asset, so their checkpoint's asset id must be
given.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pi0viz.errors import ConfigError
from pi0viz.model.config import Pi0Config

LIBERO_ASSET_ID = "physical-intelligence/libero"


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """One named policy: its model shape and the transforms openpi runs around it.

    Attributes:
        name: the config's name (openpi's training config name where one exists).
        model: the full-size model config.
        normalization: "zscore" (pi0) or "quantile" (q01/q99; openpi's choice for every non-pi0 model).
        delta_actions: pi0_libero's extra DeltaActions quirk (actions[:, :6] += state[:6] after unnormalizing).
        discrete_state_input: pi0.5 prompt "Task: ..., State: <bins>;\\nAction: " (the state as text).
        asset_id: norm stats under <checkpoint>/assets/<asset_id>/; None = must be given.
        action_dims: dims returned to the robot (LIBERO: 7).
    """

    name: str
    model: Pi0Config
    normalization: str
    delta_actions: bool
    discrete_state_input: bool
    asset_id: str | None
    action_dims: int = 7

    @property
    def family(self) -> str:
        """'pi0.5' or 'pi0'."""
        return "pi0.5" if self.model.pi05 else "pi0"

    def tiny_model_config(self, vocab_size: int) -> Pi0Config:
        """openpi's tiny model shape with this config's token layout (horizon, prompt slots, pi0/pi0.5)."""
        return Pi0Config.tiny(pi05=self.model.pi05, action_horizon=self.model.action_horizon,
                              max_token_len=self.model.max_token_len, vocab_size=vocab_size)

    def policy_kwargs(self) -> dict[str, Any]:
        """The transform settings as keyword arguments of `Policy(...)`."""
        return dict(normalization=self.normalization, delta_actions=self.delta_actions,
                    discrete_state_input=self.discrete_state_input, action_dims=self.action_dims)


CONFIGS: dict[str, PolicyConfig] = {
    c.name: c
    for c in (
        PolicyConfig("pi0_libero", Pi0Config.pi0(), "zscore", delta_actions=True, discrete_state_input=False,
                     asset_id=LIBERO_ASSET_ID),
        PolicyConfig("pi05_libero", Pi0Config.pi0(pi05=True, action_horizon=10), "quantile", delta_actions=False,
                     discrete_state_input=False, asset_id=LIBERO_ASSET_ID),
        PolicyConfig("pi0_base", Pi0Config.pi0(), "zscore", delta_actions=False, discrete_state_input=False,
                     asset_id=None),
        PolicyConfig("pi05_base", Pi0Config.pi0(pi05=True), "quantile", delta_actions=False,
                     discrete_state_input=True, asset_id=None),
    )
}
DEFAULT_CONFIG = "pi0_libero"


def get_config(name: str) -> PolicyConfig:
    """The named config; raises ConfigError listing the known names."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown policy config {name!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[name]
