"""The calls one capture block records from the expert's hooks, reduced on the device, and turned into bundles.

`AttentionCapture` holds the hook callbacks and the records (LeRobot / openpi layout); `native.NativeCapture`
extends it for transformers' own PI0. `capture.capture_attention` attaches either to a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pi0viz.core.capture_options import CaptureOptions  # the same options as the JAX model's
from pi0viz.errors import CaptureError
from pi0viz.torch_capture.bundle import CapturedCall, build_bundle
from pi0viz.torch_capture.model_parts import ModelParts
from pi0viz.torch_capture.prefix import build_prefix, fused_prefix, stacked_prefix, valid_tokens


class AttentionCapture:
    """The calls recorded inside one `capture_attention` block; turn each into a CaptureBundle."""

    def __init__(self, parts: ModelParts, options: CaptureOptions) -> None:
        self.parts = parts
        self.options = options
        self.calls: list[CapturedCall] = []
        self._layer_of = {id(m): i for i, m in enumerate(parts.expert_attention)}
        self._prefix_layer_of = {id(m): i for i, m in enumerate(parts.prefix_attention)}

    # -- hooks -------------------------------------------------------------------------------------------

    def attach(self) -> list[Any]:
        """Register the hooks on the parts (SigLIP pre-hook, prompt embedding pre-hook, each expert layer's
        forward hook, and with `options.prefix` each PaliGemma layer's); returns their handles, which the caller
        removes when the block ends."""
        parts = self.parts
        if self.options.prefix and not parts.prefix_attention:
            raise CaptureError("CaptureOptions(prefix=True): this model's PaliGemma layers were not found "
                               "(expected paligemma.model.language_model.layers)")
        handles = [
            parts.vision_tower.register_forward_pre_hook(self.on_pixels, with_kwargs=True),
            parts.embed_tokens.register_forward_pre_hook(self.on_tokens, with_kwargs=True),
        ]
        try:
            for module in parts.expert_attention:
                handles.append(module.register_forward_hook(self.on_attention, with_kwargs=True))
            for module in parts.prefix_attention if self.options.prefix else ():
                handles.append(module.register_forward_hook(self.on_prefix_attention, with_kwargs=True))
        except BaseException:
            for handle in handles:
                handle.remove()
            raise
        return handles

    def _current(self, *, new_on_records: bool) -> CapturedCall:
        if not self.calls or (new_on_records and self.calls[-1].records):
            self.calls.append(CapturedCall())
        return self.calls[-1]

    def on_pixels(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        pixels = args[0] if args else kwargs["pixel_values"]
        self._current(new_on_records=True).pixels.append(pixels.detach())

    def on_tokens(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        call = self._current(new_on_records=True)
        if call.token_ids is None:
            call.token_ids = (args[0] if args else kwargs["input"]).detach()

    def on_attention(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise CaptureError(
                "the action expert returned no attention weights: it must run eager attention "
                "(config._attn_implementation = 'eager'; LeRobot and openpi set it in sample_actions)")
        call = self._current(new_on_records=False)
        num_layers = len(self.parts.expert_attention)
        want = len(call.records) % num_layers
        if self._layer_of[id(module)] != want:
            raise CaptureError(
                f"expert layer {self._layer_of[id(module)]} ran where layer {want} was expected: the capture "
                "assumes steps x layers calls in order (step 0 layers 0..L-1, step 1, ...)")
        _, _, q, s = weights.shape  # [B, N, Q, S]
        if not call.records:
            call.num_queries, call.num_keys = q, s
            call.key_valid = _prefix_key_valid(kwargs.get("attention_mask"), weights, prefix=s - q)
        call.records.append(self._reduce(weights.detach(), prefix=s - q))

    def on_prefix_attention(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        """A PaliGemma layer on the prefix: keep its weights [B, N, P, P] as max over heads [B, P, P]."""
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise CaptureError("PaliGemma's prefix pass returned no attention weights: it must run eager attention "
                               "(LeRobot sets it in sample_actions; config._attn_implementation = 'eager')")
        call = self._current(new_on_records=True)
        want, layer = len(call.prefix_records), self._prefix_layer_of[id(module)]
        if layer != want:
            raise CaptureError(f"PaliGemma layer {layer} ran where layer {want} was expected: one prefix pass "
                               "(layers 0..L-1) per inference call")
        if want == 0:
            call.prefix_valid = valid_tokens(kwargs.get("attention_mask"), weights).detach()
        call.prefix_records.append(fused_prefix(weights, self.options.dtype))

    def _reduce(self, w: torch.Tensor, *, prefix: int) -> torch.Tensor:
        """[B, N, Q, S] -> [B, K', G', Q', S'] with the options' reductions (no copy when none applies)."""
        opts = self.options
        if opts.action_rows_only:
            w = w[:, :, self.parts.num_state_tokens:]
        if opts.prefix_keys_only:
            w = w[..., :prefix]
        if opts.fuse_heads:
            w = w.amax(dim=1, keepdim=True).unsqueeze(1)  # [B, 1, 1, Q, S]
        else:
            w = w.unflatten(1, (self.parts.num_kv_heads, -1))  # query head n = k * G + g
        return w.to(torch.float16 if opts.dtype == "float16" else torch.float32)

    # -- results -----------------------------------------------------------------------------------------

    def attention(self, call: int = -1) -> np.ndarray:
        """The reduced attention of one call as float16/float32[D, L, B, K, G, Q, S] on the host."""
        return self.stacked(self._call(call))

    def stacked(self, call: CapturedCall) -> np.ndarray:
        """`call`'s records in step-major order -> [D, L, B, K, G, Q, S] numpy (one device-to-host copy)."""
        num_layers = len(self.parts.expert_attention)
        if len(call.records) % num_layers:
            raise CaptureError(
                f"incomplete capture: {len(call.records)} expert attention calls is not a whole number of steps of "
                f"{num_layers} layers (did the call stop early?)")
        stacked = torch.stack(call.records)  # [D * L, B, K, G, Q, S]
        return stacked.reshape(-1, num_layers, *stacked.shape[1:]).cpu().numpy()

    def bundle(self, call: int = -1, **kwargs: Any):
        """One call as a validated CaptureBundle; see `pi0viz.torch_capture.bundle.build_bundle` for kwargs."""
        chosen = self._call(call)
        return build_bundle(chosen, self.stacked(chosen), self.parts, self.options, **kwargs)

    def prefix_attention(self, call: int = -1) -> np.ndarray:
        """One call's prefix-pass attention, max over heads: float16/float32[L, B, P, P] on the host (P = cameras'
        patches then prompt slots). Needs CaptureOptions(prefix=True)."""
        return stacked_prefix(self._call(call), len(self.parts.prefix_attention))

    def prefix(self, call: int = -1, **kwargs: Any):
        """One call's prefix attention as a `pi0viz.prefix/1` PrefixAttention (float16 blocks); kwargs:
        `pi0viz.torch_capture.prefix.build_prefix`'s (batch_index, camera_names, tokenizer, prompt, inference_step)."""
        chosen = self._call(call)
        return build_prefix(chosen, stacked_prefix(chosen, len(self.parts.prefix_attention)), self.parts, **kwargs)

    def bundles(self, **kwargs: Any) -> list:
        """Every recorded call as a CaptureBundle, in call order."""
        return [self.bundle(i, **kwargs) for i in range(len(self.calls))]

    def _call(self, index: int) -> CapturedCall:
        done = [c for c in self.calls if c.records]
        if not done:
            raise CaptureError(
                "no inference call was captured in this block (LeRobot's select_action serves queued actions "
                "without running the model; predict_action_chunk / sample_actions always run it)")
        try:
            return done[index]
        except IndexError:
            raise CaptureError(f"call {index} was not captured: {len(done)} call(s) recorded") from None


def _prefix_key_valid(mask: torch.Tensor | None, weights: torch.Tensor, *, prefix: int) -> torch.Tensor:
    """bool[B, P]: prefix keys the last query (an action token, which sees every valid key) may attend to.

    The 4-D mask is additive (0 = visible, a huge negative = masked) in LeRobot and openpi, or boolean.
    Without a mask, masked keys are the ones with probability exactly 0 in every head.
    """
    if mask is None:
        return (weights[:, :, -1, :prefix] > 0).any(dim=1)
    row = mask[:, 0, -1, :prefix]
    return row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min / 2
