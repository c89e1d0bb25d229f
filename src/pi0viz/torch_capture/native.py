"""Capture from transformers' own PI0 (`PI0ForConditionalGeneration` / `PI0Model`, transformers >= 5.4).

    with capture_attention(model, CaptureOptions(fuse_heads=True)) as cap:     # dispatched here by capture.py
        actions = model.sample_actions(**inputs)
    bundle = cap.bundle(camera_names=["base", "wrist"], tokenizer=processor.tokenizer)

What differs from LeRobot's tree, and how the capture deals with it:
- transformers defaults to SDPA, whose attention modules return no weights: the action expert (`model.dit`) is
  switched to eager attention for the block and back to what it was on exit, also when the block raises (same
  actions; eager costs time, docs/torch.md). The VLM prefix keeps its implementation, except with
  CaptureOptions(prefix=True), where PaliGemma's language model runs eager for the block too (its weights are the
  prefix's own attention) and is restored the same way.
- `sample_actions` keeps no per-step output: forward hooks on `model.dit.layers[i].self_attn` are the only view,
  one call per layer per denoising step, in order (capture.py's checks apply unchanged).
- the vision tower runs once per inference call on all cameras, `float[B * C, 3, h, w]` in [-1, 1]; the prompt
  embedding sees one `int[B, C_valid * 256 + T]` tensor (image positions already set to 0); which camera slots hold
  an image is `pixel_attention_mask bool[B, C]`, seen by a forward pre-hook on the PI0Model. The processor gives an
  absent camera no tokens at all: the bundle gets it back as a masked slot (zero attention, image mask False), so
  every bundle has the C camera slots of `pixel_values` in order.
- the image tokens lead the sequence (the processor's layout: `<image> * 256 * C_valid`, BOS, prompt, "\\n");
  samples of one batch must hold the same number of cameras (the processor refuses a mix too).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from pi0viz.core.capture_options import CaptureOptions
from pi0viz.errors import CaptureError
from pi0viz.torch_capture.bundle import CapturedCall, build_bundle
from pi0viz.torch_capture.prefix import build_prefix, stacked_prefix
from pi0viz.torch_capture.recording import AttentionCapture
from pi0viz.torch_capture.model_parts import ModelParts, check_not_compiled


def native_core(model: Any) -> Any | None:
    """The PI0Model (with `.vlm` and `.dit`) of a transformers PI0ForConditionalGeneration / PI0Model, else None."""
    for core in (model, getattr(model, "model", None)):
        if isinstance(core, torch.nn.Module) and hasattr(core, "vlm") and hasattr(core, "dit"):
            return core
    return None


def is_native_pi0(model: Any) -> bool:
    """True for transformers' PI0ForConditionalGeneration / PI0Model (not LeRobot's or openpi's port)."""
    return native_core(model) is not None


@dataclasses.dataclass
class NativeCall(CapturedCall):
    """A CapturedCall plus which camera slots held an image: `camera_mask` bool[B, C] (`pixel_attention_mask`), and
    `buffer` [steps * L, B, K', G', Q', S'], where the records are written (each record a view of one row)."""

    camera_mask: torch.Tensor | None = None
    buffer: torch.Tensor | None = None


class NativeCapture(AttentionCapture):
    """The calls of one `capture_attention` block on a native PI0; bundles have the C camera slots of the input."""

    def _current(self, *, new_on_records: bool) -> CapturedCall:
        if not self.calls or (new_on_records and self.calls[-1].records):
            self.calls.append(NativeCall())
        return self.calls[-1]

    def on_model(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """PI0Model pre-hook: each denoising step (and a direct forward) passes `pixel_attention_mask`."""
        starts = kwargs.get("pixel_values") is not None and kwargs.get("past_key_values") is None  # a full forward
        call = self._current(new_on_records=starts)
        mask = kwargs.get("pixel_attention_mask")
        if call.camera_mask is None and mask is not None:
            call.camera_mask = mask.detach()

    def _reduce(self, w: torch.Tensor, *, prefix: int) -> torch.Tensor:
        """The reduced record, copied into the call's buffer (sized for the config's denoising steps).

        Why a copy: eager attention allocates each weights tensor anew; keeping them all alive and stacking them at
        the end costs two fresh allocations of the whole capture (page faults dominate on CPU). One buffer per call
        costs one, and the model reuses the freed weights' memory.
        """
        reduced = super()._reduce(w, prefix=prefix)
        call = self.calls[-1]
        row = len(call.records)
        if row == 0:
            rows = int(getattr(self.parts.config, "num_inference_steps", 10)) * len(self.parts.expert_attention)
            call.buffer = reduced.new_empty((rows, *reduced.shape))
        buffer = call.buffer
        if buffer is None or row >= buffer.shape[0] or buffer.shape[1:] != reduced.shape:
            call.buffer = None  # more steps than the config's (num_steps=...): keep the records as they come
            return reduced
        buffer[row].copy_(reduced)
        return buffer[row]

    def stacked(self, call: CapturedCall) -> np.ndarray:
        """`call`'s records as [D, L, B, K, G, Q, S] numpy: the buffer's filled rows (no copy on CPU)."""
        buffer = getattr(call, "buffer", None)
        count, num_layers = len(call.records), len(self.parts.expert_attention)
        if buffer is None or count % num_layers:
            return super().stacked(call)  # also says what is wrong with an incomplete capture
        return buffer[:count].reshape(-1, num_layers, *buffer.shape[1:]).cpu().numpy()

    def attention(self, call: int = -1) -> np.ndarray:
        """One call's reduced attention in the bundle's key layout, float16/float32[D, L, B, K, G, Q, S]: every
        camera slot of the input, absent ones as zero columns."""
        return self._expanded(self._call(call))[1]

    def bundle(self, call: int = -1, *, camera_names: Sequence[str] | None = None, **kwargs: Any):
        """One call as a validated CaptureBundle (kwargs: `pi0viz.torch_capture.bundle.build_bundle`'s).

        camera_names: C names of the `pixel_values` slots; default camera_0, camera_1, ...
        """
        chosen, attention = self._expanded(self._call(call))
        names = list(camera_names) if camera_names is not None else [f"camera_{i}" for i in range(len(chosen.pixels))]
        return build_bundle(chosen, attention, self.parts, self.options, camera_names=names, **kwargs)

    def _expanded(self, call: NativeCall) -> tuple[CapturedCall, np.ndarray]:
        """The call re-laid as LeRobot's: C pixel tensors, prompt ids alone, keys of absent cameras inserted."""
        attention = self.stacked(call)  # [D, L, B, K, G, Q, S_seen]
        relaid, dest, seen_prefix = self._relaid(call)
        full_prefix = relaid.num_keys - relaid.num_queries
        keys = attention.shape[-1]
        out_keys = keys + (full_prefix - seen_prefix)
        suffix = np.arange(seen_prefix, keys)  # state/action keys (none when prefix_keys_only)
        if full_prefix == seen_prefix and (dest == np.arange(seen_prefix)).all():
            expanded = attention
        else:
            expanded = np.zeros((*attention.shape[:-1], out_keys), dtype=attention.dtype)
            for b in range(dest.shape[0]):
                cols = np.concatenate([dest[b], suffix + (full_prefix - seen_prefix)])
                row = expanded[:, :, b]  # a view: [D, L, K, G, Q, S]
                row[..., cols] = attention[:, :, b]
        return relaid, expanded

    def _relaid(self, call: NativeCall) -> tuple[CapturedCall, np.ndarray, int]:
        """The call as LeRobot's layout (C pixel tensors, prompt ids alone, validity of every camera slot), where
        each seen prefix token lands in it (int64[B, P_seen]), and P_seen."""
        if len(call.pixels) != 1 or call.token_ids is None or call.camera_mask is None:
            raise CaptureError("the call's images, prompt tokens or pixel_attention_mask were not seen "
                               "(did sample_actions run inside the block?)")
        present = call.camera_mask.cpu().numpy().astype(bool)  # [B, C]
        batch, cameras = present.shape
        counts = present.sum(axis=1)
        if (counts != counts[0]).any():
            raise CaptureError(f"the batch mixes camera counts {sorted(set(counts.tolist()))}: capture one sample per "
                               "camera count (transformers' processor refuses such a batch too)")
        pixels = call.pixels[0].reshape(batch, cameras, *call.pixels[0].shape[1:])  # [B, C, 3, h, w]
        ids = call.token_ids  # [B, n * P + T]: image positions (set to 0 by the model) first
        seen_prefix = call.num_keys - call.num_queries
        per_camera = (pixels.shape[-1] // self._patch) * (pixels.shape[-2] // self._patch)
        n = int(counts[0])
        text = ids.shape[1] - n * per_camera
        if text < 0 or seen_prefix != ids.shape[1]:
            raise CaptureError(f"the prefix holds {seen_prefix} keys; {n} cameras of {per_camera} patches and "
                               f"{ids.shape[1]} ids do not make it up")
        # where each seen key lands once every camera slot has its P keys: image block k -> k-th present slot
        dest = np.empty((batch, seen_prefix), dtype=np.int64)
        for b in range(batch):
            slots = np.flatnonzero(present[b])
            dest[b, : n * per_camera] = (slots[:, None] * per_camera + np.arange(per_camera)).reshape(-1)
        dest[:, n * per_camera:] = cameras * per_camera + np.arange(text)
        full_prefix = cameras * per_camera + text

        def spread(seen: torch.Tensor | None) -> torch.Tensor | None:  # bool[B, P_seen] -> bool[B, P], absent False
            if seen is None:
                return None
            valid = np.zeros((batch, full_prefix), dtype=bool)
            np.put_along_axis(valid, dest, seen.cpu().numpy(), axis=1)
            return torch.from_numpy(valid)

        relaid = CapturedCall(
            pixels=list(pixels.unbind(dim=1)), token_ids=ids[:, n * per_camera:], records=call.records,
            key_valid=spread(call.key_valid), num_queries=call.num_queries,
            num_keys=call.num_queries + full_prefix, prefix_records=call.prefix_records,
            prefix_valid=spread(call.prefix_valid))
        return relaid, dest, seen_prefix

    def prefix_attention(self, call: int = -1) -> np.ndarray:
        """One call's prefix-pass attention in the bundle's layout, max over heads: float16/float32[L, B, P, P] with
        every camera slot of the input (an absent camera's rows and columns 0). Needs CaptureOptions(prefix=True)."""
        return self._prefix_expanded(self._call(call))[1]

    def prefix(self, call: int = -1, *, camera_names: Sequence[str] | None = None, **kwargs: Any):
        """One call's prefix attention as a PrefixAttention (kwargs: `prefix.build_prefix`'s); camera_names: C names
        of the `pixel_values` slots, default camera_0, camera_1, ..."""
        relaid, attention = self._prefix_expanded(self._call(call))
        names = list(camera_names) if camera_names is not None else [f"camera_{i}" for i in range(len(relaid.pixels))]
        return build_prefix(relaid, attention, self.parts, camera_names=names, **kwargs)

    def _prefix_expanded(self, call: NativeCall) -> tuple[CapturedCall, np.ndarray]:
        seen = stacked_prefix(call, len(self.parts.prefix_attention))  # [L, B, P_seen, P_seen]
        relaid, dest, seen_prefix = self._relaid(call)
        full_prefix = relaid.num_keys - relaid.num_queries
        if full_prefix == seen_prefix and (dest == np.arange(seen_prefix)).all():
            return relaid, seen
        out = np.zeros((*seen.shape[:2], full_prefix, full_prefix), dtype=seen.dtype)
        for b in range(dest.shape[0]):
            out[:, b, dest[b][:, None], dest[b][None, :]] = seen[:, b]
        return relaid, out

    @property
    def _patch(self) -> int:
        return int(self.parts.config.vlm_config.vision_config.patch_size)


def find_native_parts(model: Any) -> ModelParts:
    """The hooked modules of a native PI0: the SigLIP tower, the prompt embedding and the expert's attention.

    Raises:
        CompiledModelError: the model is compiled. CaptureError: not a native PI0.
    """
    check_not_compiled(model)
    core = native_core(model)
    if core is None:
        raise CaptureError(f"expected transformers' PI0ForConditionalGeneration / PI0Model, got {type(model).__name__}")
    return ModelParts(
        vision_tower=core.vlm.vision_tower,
        embed_tokens=core.vlm.get_input_embeddings(),
        expert_attention=tuple(layer.self_attn for layer in core.dit.layers),
        prefix_attention=tuple(layer.self_attn for layer in core.vlm.language_model.layers),
        num_kv_heads=int(core.dit.config.num_key_value_heads),
        num_state_tokens=1,  # pi0: the state token opens the suffix (transformers has no pi0.5)
        config=core.config,
    )


@contextlib.contextmanager
def capture_native(model: Any, options: CaptureOptions) -> Iterator[NativeCapture]:
    """`capture_attention` for a native PI0: eager attention in the expert and hooks for the block only."""
    parts = find_native_parts(model)
    core = native_core(model)
    capture = NativeCapture(parts, options)
    before = core.dit.config._attn_implementation
    language = core.vlm.language_model
    before_prefix = language.config._attn_implementation
    handles = []
    try:
        core.dit.set_attn_implementation("eager")  # SDPA returns no weights; eager gives the same actions
        if options.prefix:  # the prefix pass too, for its weights (PaliGemma's language model only, not SigLIP)
            language.set_attn_implementation("eager")
        handles.append(core.register_forward_pre_hook(capture.on_model, with_kwargs=True))
        handles.extend(capture.attach())
        yield capture
    finally:
        for handle in handles:
            handle.remove()
        core.dit.set_attn_implementation(before)
        if language.config._attn_implementation != before_prefix:
            language.set_attn_implementation(before_prefix)
