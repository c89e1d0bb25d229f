"""Give LeRobot 0.4.4's pi0 / pi0.5 what they expect from transformers 4.53.2, without editing transformers on disk.

pi0viz's own install-side glue (written for pi0viz, not taken from openpi or LeRobot). LeRobot 0.4.4's
`modeling_pi0.py` / `modeling_pi05.py` were written against openpi's modified copy of transformers 4.53.2; on the
stock release they refuse to build (and would compute the wrong thing). What they rely on, and what this adds:

1. `transformers.models.siglip.check.check_whether_transformers_replace_is_installed_correctly()`: PI0Pytorch's
   constructor imports it and refuses to build when it is missing or returns False.
2. Every `GemmaRMSNorm` accepts `cond=` and then returns `(x, gate)`: LeRobot calls `layer.input_layernorm(x,
   cond=...)`, `layer.post_attention_layernorm(...)` and `model.norm(...)` on all Gemma layers and unpacks a pair.
   Called the stock way (no `cond`), a norm still returns a tensor, so stock Gemma code is untouched.
3. adaRMS: a Gemma config carrying `use_adarms=True` (pi0.5's action expert) gets `AdaptiveRMSNorm` layers: a
   dense map of the condition (the flow-matching time embedding) to scale, shift and gate; the checkpoint names
   them `...layernorm.dense.{weight,bias}`.
4. `modeling_gemma._gated_residual(x, y, gate)`: x + y, or x + y * gate under adaRMS; LeRobot's joint
   prefix + suffix layer loop calls it.
5. `GemmaModel.forward` of such a model (LeRobot runs the prefix alone through the VLM to fill the KV cache, and
   each denoising step's suffix alone through the expert): takes `adarms_cond`, does NOT multiply the inputs by
   sqrt(width) (LeRobot scales the language embeddings itself; the suffix must stay unscaled), and with
   `use_cache=False` reads the prefix cache without appending to it, so each denoising step sees the prefix only.
6. `PaliGemmaModel.get_image_features` of such a model returns the projected SigLIP features without stock
   PaliGemma's division by sqrt(width): pi0 feeds image and (scaled) text embeddings to the LLM as they are.
7. bfloat16: LeRobot keeps the embeddings float32 and the layers bfloat16, so SigLIP's encoder and Gemma's layer
   stack cast their input to bfloat16 when their weights are (stock code would fail on the dtype mismatch).

"Such a model" means one whose Gemma config has a `use_adarms` attribute, which LeRobot (and openpi's PyTorch
port) always set; every other Gemma / PaliGemma keeps stock behaviour. Only transformers 4.53.2 is patched (the
version LeRobot 0.4.4 asks for). Installed by scripts/install.sh torch as a module plus a `.pth` line that calls
`install()`, which only puts a finder on `sys.meta_path`: nothing is imported until transformers' gemma,
paligemma or siglip modules are, and each is patched right after it executes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any, Callable, Optional

WANTED_VERSION = "4.53.2"
_CHECK = "transformers.models.siglip.check"
_GEMMA = "transformers.models.gemma.modeling_gemma"
_PALIGEMMA = "transformers.models.paligemma.modeling_paligemma"
_SIGLIP = "transformers.models.siglip.modeling_siglip"
_NO_COND = object()  # "called without cond=" (stock callers) as opposed to cond=None (LeRobot, no adaRMS)


def _pi0_config(config: Any) -> bool:
    """LeRobot / openpi mark the Gemma configs of pi0 models with `use_adarms` (True or False)."""
    return hasattr(config, "use_adarms")


def _to_layer_dtype(x: Any, weight: Any) -> Any:
    """Cast float32 activations to bfloat16 when the layer weights are bfloat16 (LeRobot's mixed precision)."""
    import torch

    return x.to(torch.bfloat16) if weight.dtype == torch.bfloat16 and x.dtype != torch.bfloat16 else x


# ---------------------------------------------------------------------------------------------------- gemma


def _patch_gemma(mod: types.ModuleType) -> None:
    import torch
    from torch import nn
    from transformers.masking_utils import create_causal_mask
    from transformers.modeling_outputs import BaseModelOutputWithPast

    stock_norm_forward = mod.GemmaRMSNorm.forward
    stock_layer_init = mod.GemmaDecoderLayer.__init__
    stock_model_init = mod.GemmaModel.__init__
    stock_model_forward = mod.GemmaModel.forward

    def norm_forward(self: Any, x: torch.Tensor, cond: Any = _NO_COND) -> Any:
        """Stock RMSNorm; with `cond=` (LeRobot's call) the pair (x, gate=None). A plain norm takes no condition."""
        out = stock_norm_forward(self, x)
        if cond is _NO_COND:
            return out
        if cond is not None:
            raise ValueError("this Gemma layer has a plain RMSNorm (config.use_adarms is False); cond must be None")
        return out, None

    class AdaptiveRMSNorm(nn.Module):
        """adaRMS (pi0.5 action expert): RMS-normalise x[B, S, W], then x * (1 + scale) + shift; also return gate.

        scale, shift, gate = split(dense(cond), 3), cond float[B, cond_dim]. All arithmetic in float32, the
        result in x's dtype. There is no learned `weight`: the condition supplies the scale.
        """

        def __init__(self, dim: int, eps: float, cond_dim: int):
            super().__init__()
            self.eps = eps
            self.cond_dim = cond_dim
            self.dense = nn.Linear(cond_dim, 3 * dim)

        def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
            if cond is None:
                raise ValueError("this Gemma layer uses adaRMS (config.use_adarms); pass cond=[B, cond_dim]")
            xf = x.float()
            normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
            modulation = self.dense(cond)  # [B, 3W]
            if x.dim() == 3:
                modulation = modulation[:, None, :]  # one modulation per sequence, broadcast over tokens
            scale, shift, gate = modulation.chunk(3, dim=-1)
            out = normed * (1.0 + scale.float()) + shift.float()
            return out.to(x.dtype), gate.to(x.dtype)

        def extra_repr(self) -> str:
            return f"cond_dim={self.cond_dim}, eps={self.eps}"

    def adaptive_dim(config: Any) -> Optional[int]:
        if not getattr(config, "use_adarms", False):
            return None
        return config.adarms_cond_dim if getattr(config, "adarms_cond_dim", None) is not None else config.hidden_size

    def layer_init(self: Any, config: Any, layer_idx: int) -> None:
        stock_layer_init(self, config, layer_idx)
        cond_dim = adaptive_dim(config)
        if cond_dim is not None:
            self.input_layernorm = AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)
            self.post_attention_layernorm = AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)

    def model_init(self: Any, config: Any) -> None:
        stock_model_init(self, config)
        cond_dim = adaptive_dim(config)
        if cond_dim is not None:
            self.norm = AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps, cond_dim)

    def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: Optional[torch.Tensor]) -> torch.Tensor:
        """Residual add; under adaRMS the branch output is scaled by the norm's gate first."""
        return x + y if gate is None else x + y * gate

    def layer_forward(self: Any, hidden_states: torch.Tensor, adarms_cond: Optional[torch.Tensor] = None,
                      **kwargs: Any) -> tuple[torch.Tensor]:
        """Stock decoder layer (pre-norm attention, pre-norm MLP) with the adaRMS condition and gated residuals.

        Only LeRobot's path reaches it (see `model_forward`); stock GemmaModel keeps the stock layer forward.
        """
        h, gate = self.input_layernorm(hidden_states, cond=adarms_cond)
        h, _ = self.self_attn(hidden_states=h, **kwargs)
        hidden_states = gated_residual(hidden_states, h, gate)
        h, gate = self.post_attention_layernorm(hidden_states, cond=adarms_cond)
        h = self.mlp(h)
        return (gated_residual(hidden_states, h, gate),)

    class ReadOnlyCache:
        """A view of a filled KV cache whose `update` returns cached + new keys/values and stores nothing."""

        def __init__(self, cache: Any):
            self.cache = cache

        def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs: Any = None) -> Any:
            old_key, old_value = self.cache[layer_idx]  # float[B, K, P, head_dim]
            return torch.cat([old_key, key], dim=2), torch.cat([old_value, value], dim=2)

    def model_forward(self: Any, input_ids: Optional[torch.Tensor] = None, attention_mask: Any = None,
                      position_ids: Optional[torch.Tensor] = None, past_key_values: Any = None,
                      inputs_embeds: Optional[torch.Tensor] = None, use_cache: Optional[bool] = None,
                      output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                      cache_position: Optional[torch.Tensor] = None, adarms_cond: Optional[torch.Tensor] = None,
                      **kwargs: Any) -> Any:
        """GemmaModel.forward; for pi0 models (see module docstring, item 5) pi0viz's version, else stock."""
        if not _pi0_config(self.config):
            if adarms_cond is not None:
                raise ValueError("adarms_cond needs a Gemma config with use_adarms (LeRobot's pi0.5 expert)")
            return stock_model_forward(self, input_ids=input_ids, attention_mask=attention_mask,
                                       position_ids=position_ids, past_key_values=past_key_values,
                                       inputs_embeds=inputs_embeds, use_cache=use_cache,
                                       output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                       cache_position=cache_position, **kwargs)
        if output_attentions or output_hidden_states:
            raise ValueError("pi0's Gemma forward returns the last hidden state and the KV cache only")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and past_key_values is None:
            past_key_values = mod.DynamicCache()
        if cache_position is None:
            seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            cache_position = torch.arange(seen, seen + inputs_embeds.shape[1], device=inputs_embeds.device)
        if position_ids is None:
            position_ids = cache_position[None]
        mask = create_causal_mask(config=self.config, input_embeds=inputs_embeds, attention_mask=attention_mask,
                                  cache_position=cache_position, past_key_values=past_key_values,
                                  position_ids=position_ids)
        layer_cache = past_key_values if use_cache or past_key_values is None else ReadOnlyCache(past_key_values)
        hidden = inputs_embeds if not self.layers else _to_layer_dtype(inputs_embeds,
                                                                       self.layers[0].self_attn.q_proj.weight)
        rope = self.rotary_emb(hidden, position_ids)
        for layer in self.layers[: self.config.num_hidden_layers]:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, past_key_value=layer_cache,
                           use_cache=use_cache, cache_position=cache_position, position_embeddings=rope,
                           adarms_cond=adarms_cond, **kwargs)[0]
        hidden, _ = self.norm(hidden, cond=adarms_cond)
        return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=past_key_values if use_cache else None)

    stock_layer_forward = mod.GemmaDecoderLayer.forward

    def any_layer_forward(self: Any, *args: Any, adarms_cond: Any = _NO_COND, **kwargs: Any) -> Any:
        """Stock layer forward unless called by `model_forward` (which always passes adarms_cond=)."""
        if adarms_cond is _NO_COND:
            return stock_layer_forward(self, *args, **kwargs)
        return layer_forward(self, *args, adarms_cond=adarms_cond, **kwargs)

    mod.GemmaRMSNorm.forward = norm_forward
    mod.AdaptiveRMSNorm = AdaptiveRMSNorm
    mod._gated_residual = gated_residual
    mod.GemmaDecoderLayer.__init__ = layer_init
    mod.GemmaDecoderLayer.forward = any_layer_forward
    mod.GemmaModel.__init__ = model_init
    mod.GemmaModel.forward = model_forward


# --------------------------------------------------------------------------------------- paligemma, siglip


def _patch_paligemma(mod: types.ModuleType) -> None:
    stock = mod.PaliGemmaModel.get_image_features

    def get_image_features(self: Any, pixel_values: Any) -> Any:
        """float[N, 3, h, w] -> float[N, patches, W]; pi0 models skip stock's division by sqrt(W) (item 6)."""
        if not _pi0_config(self.config.text_config):
            return stock(self, pixel_values)
        return self.multi_modal_projector(self.vision_tower(pixel_values).last_hidden_state)

    mod.PaliGemmaModel.get_image_features = get_image_features


def _patch_siglip(mod: types.ModuleType) -> None:
    stock = mod.SiglipEncoder.forward

    def encoder_forward(self: Any, inputs_embeds: Any, *args: Any, **kwargs: Any) -> Any:
        """Stock encoder, its float32 input cast to bfloat16 when the layers are bfloat16 (item 7)."""
        if len(self.layers):
            inputs_embeds = _to_layer_dtype(inputs_embeds, self.layers[0].self_attn.q_proj.weight)
        return stock(self, inputs_embeds, *args, **kwargs)

    mod.SiglipEncoder.forward = encoder_forward


# ------------------------------------------------------------------------------------------ the check module


def check_whether_transformers_replace_is_installed_correctly() -> bool:
    """LeRobot's check: True when transformers is 4.53.2 and this module's changes are in place."""
    import transformers
    from transformers.models.gemma import modeling_gemma

    return transformers.__version__ == WANTED_VERSION and hasattr(modeling_gemma, "AdaptiveRMSNorm")


# ------------------------------------------------------------------------------------------------- the hook

_PATCHES: dict[str, Callable[[types.ModuleType], None]] = {
    _GEMMA: _patch_gemma, _PALIGEMMA: _patch_paligemma, _SIGLIP: _patch_siglip}


class _PatchAfterExec(importlib.abc.Loader):
    """Runs the real loader, then pi0viz's patch for that module."""

    def __init__(self, real: importlib.abc.Loader, patch: Callable[[types.ModuleType], None]):
        self.real, self.patch = real, patch

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ... for inspect and tracebacks
        return getattr(self.real, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[types.ModuleType]:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.real.exec_module(module)
        self.patch(module)


class _CheckLoader(importlib.abc.Loader):
    """Serves `transformers.models.siglip.check` (a module stock transformers does not have)."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[types.ModuleType]:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.check_whether_transformers_replace_is_installed_correctly = (
            check_whether_transformers_replace_is_installed_correctly)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != _CHECK and fullname not in _PATCHES:
            return None
        import transformers  # already imported: these are its submodules

        if transformers.__version__ != WANTED_VERSION:
            return None  # another transformers: leave it alone (LeRobot then says which version it wants)
        if fullname == _CHECK:
            return importlib.util.spec_from_loader(fullname, _CheckLoader())
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchAfterExec(spec.loader, _PATCHES[fullname])
        return spec


def install() -> None:
    """Arm the finder (idempotent). Modules imported before this call stay stock."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
