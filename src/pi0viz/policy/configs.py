"""Named policy configs: one table, the facts of openpi's training configs that inference depends on, and the
transform chains each config runs around its model.

    name          model                               inputs                          outputs
    pi0_libero    pi0  (gemma_2b + gemma_300m)        libero, zscore, tokenize, pad   unzscore, absolute(6), slice(7)
    pi05_libero   pi0.5, 10 actions, 200 slots        libero, quantile, tokenize, pad unquantile, slice(7)
    pi0_base      pi0                                 libero, zscore, tokenize, pad   unzscore, slice(7)
    pi05_base     pi0.5, 200 slots                    libero, quantile, tokenize with unquantile, slice(7)
                                                      the discrete state, pad
    reach_tiny    pi0viz's trained reach-tiny         libero (one camera), zscore,    unzscore, slice(7)
                  (pi0viz.policy.reach_model)         tokenize, pad

(every input chain also resizes the images with pad to 224 x 224 and injects the default prompt.)
`make_transforms(model, tokenizer, norm_stats, pipeline=NAME)` builds the two chains of a name from the small
transforms of `pi0viz.policy.transforms`; a `Policy` takes a model and that result.

Every openpi config has a tiny variant (`tiny_model_config`): the same pipeline and token layout around openpi's
tiny model shape (dummy Gemma experts, SigLIP mu/14, float32), for offline demos and tests with random weights.
Cameras, image masks and the output slice (7 dims) are LIBERO's for every config (pi0viz's policy wing speaks
LIBERO's observation keys); the base configs name no norm-stats asset, so their checkpoint's asset id must be
given.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pi0viz.errors import ConfigError
from pi0viz.model.config import Pi0Config
from pi0viz.policy.norm_stats import NormStats, check_norm_stats
from pi0viz.policy.tokenizer import PromptTokenizer
from pi0viz.policy.transforms import (
    AbsoluteActions,
    InjectDefaultPrompt,
    LiberoInputs,
    NormalizeState,
    PadState,
    PolicyTransforms,
    ResizeImagesWithPad,
    SliceActions,
    TokenizePrompt,
    UnnormalizeActions,
    compose,
)

LIBERO_ASSET_ID = "physical-intelligence/libero"
DELTA_DIMS = 6  # pi0_libero's delta quirk covers the end effector's position and axis-angle


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """The transforms of one named config, as settings of the LIBERO chains (see the module table).

    Attributes:
        normalization: "zscore" (pi0) or "quantile" (q01/q99; openpi's choice for every non-pi0 model).
        delta_actions: pi0_libero's extra DeltaActions quirk (AbsoluteActions: actions[:, :6] += state[:6]).
        discrete_state_input: pi0.5 prompt "Task: ..., State: <bins>;\\nAction: " (the state as text).
        action_dims: dims returned to the robot (LIBERO: 7).
    """

    normalization: str
    delta_actions: bool = False
    discrete_state_input: bool = False
    action_dims: int = 7


PIPELINES: dict[str, Pipeline] = {
    "pi0_libero": Pipeline("zscore", delta_actions=True),
    "pi05_libero": Pipeline("quantile"),
    "pi0_base": Pipeline("zscore"),
    "pi05_base": Pipeline("quantile", discrete_state_input=True),
    "reach_tiny": Pipeline("zscore"),
}


def make_transforms(model: Pi0Config, tokenizer: PromptTokenizer, norm_stats: NormStats, *,
                    pipeline: str | Pipeline = "pi0_libero", action_dims: int | None = None,
                    default_prompt: str | None = None) -> PolicyTransforms:
    """The input and output chains of a named pipeline around `model` (its cameras, T prompt slots, action_dim).

    Args:
        model: the model config: image_keys, max_token_len (T), action_dim (pi0: 32).
        tokenizer: the prompt tokenizer.
        norm_stats: {"state": {"mean", "std"[, "q01", "q99"]}, "actions": {...}}: 1..action_dim numbers each.
        pipeline: a name of PIPELINES or a Pipeline.
        action_dims: overrides the pipeline's robot action width (1..action_dim).
        default_prompt: used when a request has no "prompt".
    Raises:
        ConfigError for an unknown pipeline or impossible widths; CheckpointError for malformed stats.
    """
    if isinstance(pipeline, str):
        if pipeline not in PIPELINES:
            raise ConfigError(f"unknown policy pipeline {pipeline!r}; expected one of {sorted(PIPELINES)}")
        pipeline = PIPELINES[pipeline]
    dims = pipeline.action_dims if action_dims is None else action_dims
    if not 1 <= dims <= model.action_dim:
        raise ConfigError(f"action_dims must be in [1, {model.action_dim}], got {dims}")
    if pipeline.delta_actions and dims < DELTA_DIMS:
        raise ConfigError(f"delta_actions adds the state to action dims 0-5, so action_dims must be >= 6, got {dims}")
    stats = check_norm_stats(norm_stats, model.action_dim)
    inputs = compose(
        LiberoInputs(tuple(model.image_keys)),
        NormalizeState(stats["state"], pipeline.normalization),
        InjectDefaultPrompt(default_prompt),
        ResizeImagesWithPad(),
        TokenizePrompt(tokenizer, model.max_token_len, pipeline.discrete_state_input),
        PadState(model.action_dim),
    )
    outputs = compose(
        UnnormalizeActions(stats, pipeline.normalization),
        AbsoluteActions(DELTA_DIMS) if pipeline.delta_actions else None,
        SliceActions(dims),
    )
    return PolicyTransforms(inputs, outputs)


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """One named policy: its model shape and the transforms openpi runs around it.

    Attributes:
        name: the config's name (openpi's training config name), also the name of its PIPELINES entry.
        model: the full-size model config.
        asset_id: norm stats under <checkpoint>/assets/<asset_id>/; None = must be given.
    """

    name: str
    model: Pi0Config
    asset_id: str | None

    @property
    def pipeline(self) -> Pipeline:
        """The config's transform settings (PIPELINES[name])."""
        return PIPELINES[self.name]

    @property
    def normalization(self) -> str:
        return self.pipeline.normalization

    @property
    def delta_actions(self) -> bool:
        return self.pipeline.delta_actions

    @property
    def discrete_state_input(self) -> bool:
        return self.pipeline.discrete_state_input

    @property
    def action_dims(self) -> int:
        return self.pipeline.action_dims

    @property
    def family(self) -> str:
        """'pi0.5' or 'pi0'."""
        return "pi0.5" if self.model.pi05 else "pi0"

    def tiny_model_config(self, vocab_size: int) -> Pi0Config:
        """openpi's tiny model shape with this config's token layout (horizon, prompt slots, pi0/pi0.5)."""
        return Pi0Config.tiny(pi05=self.model.pi05, action_horizon=self.model.action_horizon,
                              max_token_len=self.model.max_token_len, vocab_size=vocab_size)

    def transforms(self, model: Pi0Config, tokenizer: PromptTokenizer, norm_stats: NormStats,
                   **kwargs: Any) -> PolicyTransforms:
        """This config's chains around `model` (make_transforms; kwargs: action_dims, default_prompt)."""
        return make_transforms(model, tokenizer, norm_stats, pipeline=self.pipeline, **kwargs)


CONFIGS: dict[str, PolicyConfig] = {
    c.name: c
    for c in (
        PolicyConfig("pi0_libero", Pi0Config.pi0(), asset_id=LIBERO_ASSET_ID),
        PolicyConfig("pi05_libero", Pi0Config.pi0(pi05=True, action_horizon=10), asset_id=LIBERO_ASSET_ID),
        PolicyConfig("pi0_base", Pi0Config.pi0(), asset_id=None),
        PolicyConfig("pi05_base", Pi0Config.pi0(pi05=True), asset_id=None),
    )
}
DEFAULT_CONFIG = "pi0_libero"


def get_config(name: str) -> PolicyConfig:
    """The named config; raises ConfigError listing the known names."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown policy config {name!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[name]
