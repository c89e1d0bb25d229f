"""openpi's flow-matching training loss for pi0 / pi0.5 (`Pi0.compute_loss`), on pi0viz's model code.

One pass runs prefix and suffix together (no KV cache): the prefix [images, prompt] is bidirectional, the suffix
uses the same block-causal mask as sampling. With t ~ 0.999 * Beta(1.5, 1) + 0.001 and noise e ~ N(0, I):

    x_t = t e + (1 - t) x          (t = 1 is noise, t = 0 is data, as the sampler)
    u_t = e - x                    (the velocity the sampler integrates with dt = -1/steps)
    loss = mean over action dims of (v_theta(x_t, t) - u_t)^2      -> float32[B, A]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pi0viz.model import gemma
from pi0viz.model.config import Pi0Config
from pi0viz.model.pi0 import Observation, Params, _linear, embed_prefix, embed_suffix, make_attn_mask


def flow_matching_loss(params: Params, config: Pi0Config, rng: jax.Array, obs: Observation,
                       actions: jax.Array) -> jax.Array:
    """Per-token flow-matching loss.

    Args:
        params: the openpi parameter tree.
        config: model configuration (static under jit).
        rng: PRNG key for the noise and the flow times.
        obs: preprocessed inputs, batch B (as `sample_actions` takes them).
        actions: float32[B, A, action_dim], normalized and zero-padded target chunk.
    Returns:
        float32[B, A], the squared velocity error averaged over the action dims.
    """
    b = actions.shape[0]
    noise_rng, time_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, actions.shape, jnp.float32)
    time = jax.random.beta(time_rng, 1.5, 1.0, (b,)) * 0.999 + 0.001  # [B]
    t = time[:, None, None]
    x_t = t * noise + (1.0 - t) * actions
    u_t = noise - actions

    v_t = velocity(params, config, obs, x_t, time)
    return jnp.mean(jnp.square(v_t - u_t), axis=-1)


def velocity(params: Params, config: Pi0Config, obs: Observation, x_t: jax.Array, time: jax.Array) -> jax.Array:
    """The model's flow velocity v_theta(x_t, t) from one joint prefix + suffix pass (what the cached sampler
    computes in each step, up to float rounding).

    x_t: float32[B, A, action_dim]; time: float32[B]. Returns float32[B, A, action_dim].
    """
    prefix_tokens, prefix_mask, prefix_ar = embed_prefix(params, config, obs)  # [B, P, W_0]
    suffix_tokens, suffix_mask, suffix_ar, cond = embed_suffix(params, config, obs.state, x_t, time)  # [B, Q, W_1]
    input_mask = jnp.concatenate([prefix_mask, suffix_mask], axis=1)  # [B, P + Q]
    ar_mask = jnp.concatenate([prefix_ar, suffix_ar])
    attn_mask = make_attn_mask(input_mask, ar_mask)  # [B, P + Q, P + Q]
    positions = jnp.cumsum(input_mask, axis=1) - 1
    (_, suffix_out), _, _ = gemma.transformer(
        params["PaliGemma"]["llm"], [prefix_tokens, suffix_tokens], positions, attn_mask,
        adarms_cond=[None, cond], dtype=config.compute_dtype)
    return _linear(suffix_out[:, -config.action_horizon:], params["action_out_proj"]).astype(jnp.float32)
