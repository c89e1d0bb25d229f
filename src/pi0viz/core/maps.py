"""The one step from a capture bundle to what every output draws or measures.

Every output (the JPEG tree, the viewer, the summaries, the metrics and report, the episode video and Rerun
recording, the sweep record) starts here, so a camera, a maximum and a mass mean the same thing in all of them:

    CaptureBundle
      -> drawn_cameras      THE camera rule: a camera slot is drawn iff its image mask is True AND its keys
                            receive attention somewhere in the call (openpi masks a padded slot's keys to exactly
                            0 probability, so a slot whose mask says True but that nobody ever attends to is a
                            padded slot too)
      -> DrawnKeys          the drawn keys R: drawn cameras' patches in slot order, then the non-pad prompt tokens
      -> fused_maps         float32[D, L, A, R] max over heads (and per-head maps, region masses) for one batch
                            element and a subset of the stored steps and layers: pi0viz.core.fusion does the math
      -> fused_map_steps    the same, one denoising step at a time (the viewer: temporaries stay one step in size)
      -> action_key_maps    head mean and head max over EVERY key S (the analysis: sinks, region masses, grounding)

    DecodeBundle (pi0-FAST, one query per decode step J over the kv-cache slots)
      -> decode_maps        the same camera rule and prompt pieces over the prefix (unaligned back to cameras'
                            patches and prompt slots), float32[J', L', R] head max, and the map over the tokens
                            generated so far float32[J', L', Jg]

Axis letters as in docs/architecture.md: D steps, L layers, B batch, C camera slots, A action tokens, N query heads,
R drawn keys, S keys, M regions, T prompt slots.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from pi0viz.core import fusion
from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.decode_bundle import DecodeBundle
from pi0viz.core.layout import Region
from pi0viz.errors import FusionError


@dataclasses.dataclass
class DrawnKeys:
    """Which cameras and keys of one batch element are drawn: the bookkeeping every output shares.

    Attributes:
        batch_index: the batch element.
        image_masks: bool[B, C], the bundle's masks with the silent cameras of `batch_index` cleared (pass these,
            not the bundle's, to pi0viz.core.fusion).
        cameras: the drawn camera slots, slot order (C' of them).
        camera_names: their names.
        masked: slots whose image mask is False (padded slots, as the capture says).
        silent: slots whose mask is True but whose keys get exactly 0 attention (logits: the mask value) in every
            step, layer, head and action row: padded slots that the capture did not mark.
        keys: int64[R] indices into S of the drawn keys.
        regions: [(name, start, stop)] ranges into R: one per drawn camera, then "text" (possibly empty).
        text_slots: int64[n] the prompt slots drawn (the non-pad tokens), in prompt order.
        text_pieces: [n] their decoded pieces.
    """

    batch_index: int
    image_masks: np.ndarray
    cameras: list[int]
    camera_names: list[str]
    masked: list[int]
    silent: list[int]
    keys: np.ndarray
    regions: list[tuple[str, int, int]]
    text_slots: np.ndarray
    text_pieces: list[str]
    all_camera_names: list[str] = dataclasses.field(default_factory=list, repr=False)

    @property
    def drawn_mask(self) -> np.ndarray:
        """bool[C]: True for the drawn camera slots of this batch element."""
        return self.image_masks[self.batch_index].copy()

    def layout_regions(self, layout_regions: Sequence[Region]) -> list[Region]:
        """The layout's key regions (every camera slot, the prompt, state, actions) less the undrawn cameras."""
        drawn = set(self.camera_names)
        return [r for r in layout_regions if r.kind != "camera" or r.name in drawn]

    def notes(self, among: Sequence[int] | None = None) -> list[str]:
        """One line per kind of undrawn camera (masked, silent), limited to the slots `among` (default all)."""
        keep = set(range(len(self.all_camera_names))) if among is None else set(among)
        names = self.all_camera_names
        out = []
        masked = [names[c] for c in self.masked if c in keep]
        if masked:
            out.append(f"masked camera(s) {masked} are padded slots: no files written for them")
        silent = [names[c] for c in self.silent if c in keep]
        if silent:
            out.append(f"camera(s) {silent} receive exactly 0 attention in every cell, as openpi's masks leave a "
                       "padded camera: treated as padded, no files written for them")
        return out


def drawn_cameras(bundle: CaptureBundle, batch_index: int = 0) -> DrawnKeys:
    """THE camera rule, and the drawn keys that follow from it, for one batch element.

    Args:
        bundle: the capture (any reduction: prefix keys, action rows, fused heads, logits).
        batch_index: the batch element.

    Returns:
        DrawnKeys. A camera is drawn iff bundle.image_masks[batch_index, c] is True and its keys receive attention.

    Raises:
        FusionError: batch_index out of range.
    """
    B = bundle.batch_size
    if not 0 <= batch_index < B:
        raise FusionError(f"batch_index {batch_index} out of range: the attention has batch size B = {B}")
    layout = bundle.layout
    masks = np.array(bundle.image_masks, dtype=bool, copy=True)
    silent = fusion.padded_cameras(bundle.attention, layout, masks, kind=bundle.attention_kind,
                                   batch_index=batch_index)
    masks[batch_index, silent] = False
    row = masks[batch_index]
    keys, regions = fusion.render_key_index(layout, row, bundle.token_mask[batch_index])
    slots = np.flatnonzero(np.asarray(bundle.token_mask[batch_index], bool)).astype(np.int64)
    cameras = [int(c) for c in np.flatnonzero(row)]
    return DrawnKeys(
        batch_index=batch_index,
        image_masks=masks,
        cameras=cameras,
        camera_names=[bundle.camera_names[c] for c in cameras],
        masked=[int(c) for c in np.flatnonzero(~np.asarray(bundle.image_masks[batch_index], bool))],
        silent=[int(c) for c in silent],
        keys=keys,
        regions=[(str(n), int(s), int(e)) for n, s, e in regions],
        text_slots=slots,
        text_pieces=[str(p) for p in np.asarray(bundle.token_pieces[batch_index])[slots]],
        all_camera_names=list(bundle.camera_names),
    )


def drawn_image_masks(bundle: CaptureBundle, batch_index: int = 0) -> tuple[np.ndarray, list[str]]:
    """(bool[B, C] the masks with the silent cameras of `batch_index` cleared, one note per kind of undrawn camera)."""
    drawn = drawn_cameras(bundle, batch_index)
    return drawn.image_masks, drawn.notes()


@dataclasses.dataclass
class FusedMaps:
    """One batch element's fused attention over the drawn keys, for the chosen steps and layers.

    Attributes:
        drawn: the camera rule's result and the drawn keys (see DrawnKeys).
        fused: float32[D', L', A, R] max over the N heads of the probability on each drawn key.
        heads: float32[D', L', A, N, R] per-head probabilities, or None unless asked for.
        region_mass: float32[D', L', A, M'] probability mass on each drawn region (drawn cameras, then the prompt),
            averaged over heads (a capture fused on the device: the sum of the fused map, an upper bound).
        step_pos, layer_pos: int64[D'], int64[L'] positions of the kept steps/layers in the bundle's D and L axes.
        step_labels, layer_labels: int64[D'], int64[L'] their original indices (the tree's path numbers).
        diffusion_times: float32[D'] flow time t of each kept step.
        heads_fused: True when the capture held only the max over heads (N = 1).
    """

    drawn: DrawnKeys
    fused: np.ndarray
    heads: np.ndarray | None
    region_mass: np.ndarray
    step_pos: np.ndarray
    layer_pos: np.ndarray
    step_labels: np.ndarray
    layer_labels: np.ndarray
    diffusion_times: np.ndarray
    heads_fused: bool

    @property
    def keys(self) -> np.ndarray:
        return self.drawn.keys

    @property
    def regions(self) -> list[tuple[str, int, int]]:
        return self.drawn.regions

    @property
    def cameras(self) -> list[int]:
        return self.drawn.cameras

    @property
    def camera_names(self) -> list[str]:
        return self.drawn.camera_names

    @property
    def text_pieces(self) -> list[str]:
        return self.drawn.text_pieces

    @property
    def text_slots(self) -> np.ndarray:
        return self.drawn.text_slots

    @property
    def notes(self) -> list[str]:
        return self.drawn.notes()

    @property
    def peaks(self) -> np.ndarray:
        """float32[D', L', A, M'] the largest fused value of each drawn region (0 for an empty prompt)."""
        D, L, A, _ = self.fused.shape
        return np.stack([self.fused[..., s:e].max(axis=-1) if e > s else np.zeros((D, L, A), np.float32)
                         for _, s, e in self.regions], axis=-1)


def _positions(pos: Sequence[int] | np.ndarray | None, size: int, what: str) -> np.ndarray:
    if pos is None:
        return np.arange(size, dtype=np.int64)
    out = np.asarray(pos, dtype=np.int64).reshape(-1)
    if out.size == 0 or (out < 0).any() or (out >= size).any():
        raise FusionError(f"{what} positions {out.tolist()} out of range: the capture stores {size}")
    return out


def fused_maps(bundle: CaptureBundle, *, batch_index: int = 0, step_pos: Sequence[int] | None = None,
               layer_pos: Sequence[int] | None = None, keep_heads: bool = False, check: bool = True,
               drawn: DrawnKeys | None = None) -> FusedMaps:
    """Head fusion of one batch element over the drawn keys (the camera rule applied), for some steps and layers.

    Args:
        bundle: the capture.
        batch_index: the batch element.
        step_pos, layer_pos: positions (not labels) into the bundle's D and L axes to fuse; None = all. Only those
            are fused, so an aggregate over one step costs one step's work. The camera rule always looks at the
            whole call, so every output draws the same cameras whatever it selects.
        keep_heads: also return the per-head maps.
        check: verify that "probs" rows are probabilities over their valid keys (pi0viz.core.fusion).
        drawn: the result of `drawn_cameras(bundle, batch_index)` when the caller already has it.

    Returns:
        FusedMaps. Raises FusionError (one line) for attention that cannot be fused as the bundle claims.
    """
    drawn = drawn if drawn is not None else drawn_cameras(bundle, batch_index)
    D, L = bundle.attention.shape[:2]
    d = _positions(step_pos, D, "step")
    l = _positions(layer_pos, L, "layer")
    attention = bundle.attention
    if len(d) != D or (d != np.arange(D)).any():
        attention = attention[d]
    if len(l) != L or (l != np.arange(L)).any():
        attention = attention[:, l]
    heads_fused = bundle.attention_heads == "max"
    call = fusion.fuse_call(attention, bundle.layout, drawn.image_masks, bundle.token_mask,
                            kind=bundle.attention_kind, heads_fused=heads_fused, batch_index=batch_index,
                            keep_heads=keep_heads, check=check)
    return FusedMaps(drawn=drawn, fused=call.fused, heads=call.heads, region_mass=call.region_mass,
                     step_pos=d, layer_pos=l, step_labels=np.asarray(bundle.step_indices, np.int64)[d],
                     layer_labels=np.asarray(bundle.layer_indices, np.int64)[l],
                     diffusion_times=np.asarray(bundle.diffusion_times, np.float32)[d], heads_fused=heads_fused)


@dataclasses.dataclass
class FusedMapSteps:
    """`fused_maps` one denoising step at a time: iterate for D pi0viz.core.fusion.FusedStep (float32
    heads [L, N, A, R], fused [L, A, R], layout_mass [L, A, N, M] over every layout region)."""

    drawn: DrawnKeys
    steps: Iterator[fusion.FusedStep]

    def __iter__(self) -> Iterator[fusion.FusedStep]:
        return self.steps


def fused_map_steps(bundle: CaptureBundle, *, batch_index: int = 0, check: bool = True) -> FusedMapSteps:
    """The streaming form of `fused_maps` over the whole call (the viewer's: one step's temporaries at a time)."""
    drawn = drawn_cameras(bundle, batch_index)
    steps = fusion.fuse_steps(bundle.attention, bundle.layout, drawn.image_masks, bundle.token_mask,
                              kind=bundle.attention_kind, heads_fused=bundle.attention_heads == "max",
                              batch_index=batch_index, check=check)
    return FusedMapSteps(drawn=drawn, steps=steps)


@dataclasses.dataclass
class ActionKeyMaps:
    """The action queries' attention over EVERY key S (state and action keys included), heads reduced two ways.

    Attributes:
        drawn: the camera rule's result (see DrawnKeys).
        mean: float32[D, L, A, S] probability averaged over the query heads: a distribution per row. For a capture
            fused on the device the per-head values are gone and this holds the fused values.
        peak: float32[D, L, A, S] max over the query heads: on the drawn keys, exactly `fused_maps(...).fused`.
        valid: bool[S] keys an action query may attend to (drawn cameras, prompt tokens, state, actions).
        heads_fused: True when the capture held only the max over heads.
    """

    drawn: DrawnKeys
    mean: np.ndarray
    peak: np.ndarray
    valid: np.ndarray
    heads_fused: bool


def action_key_maps(bundle: CaptureBundle, *, batch_index: int = 0, check: bool = True) -> ActionKeyMaps:
    """Head mean and head max of the action rows over every key, from the same fusion pass as `fused_maps`.

    Args:
        bundle: the capture. batch_index: the batch element. check: as in `fused_maps`.

    Returns:
        ActionKeyMaps with float32[D, L, A, S] arrays (pi0: 31 MB each). Raises FusionError as `fused_maps`.
    """
    drawn = drawn_cameras(bundle, batch_index)
    layout = bundle.layout
    D, L, _, K, G, _, S = bundle.attention.shape
    A, N = layout.num_action_tokens, K * G
    mean = np.empty((D, L, A, S), np.float32)
    peak = np.empty((D, L, A, S), np.float32)
    steps = fusion.fuse_steps(bundle.attention, layout, drawn.image_masks, bundle.token_mask,
                              kind=bundle.attention_kind, heads_fused=bundle.attention_heads == "max",
                              batch_index=batch_index, check=check, drawn=False)
    for d, step in enumerate(steps):
        rows = step.rows.reshape(L, N, A, S)  # probabilities of the action queries, every key
        # Head by head into the outputs: 2-3x faster than mean/max over a middle axis of a strided view.
        m, p = mean[d], peak[d]
        np.copyto(m, rows[:, 0])
        np.copyto(p, rows[:, 0])
        for n in range(1, N):
            np.add(m, rows[:, n], out=m)
            np.maximum(p, rows[:, n], out=p)
        m *= np.float32(1.0 / N)
    b = slice(batch_index, batch_index + 1)
    valid = fusion.key_validity(layout, drawn.image_masks[b], bundle.token_mask[b])[0, layout.action_queries().start]
    return ActionKeyMaps(drawn=drawn, mean=mean, peak=peak, valid=valid, heads_fused=bundle.attention_heads == "max")


@dataclasses.dataclass
class DecodeMaps:
    """One batch element's fused decode attention (pi0-FAST), for the chosen decode steps and layers.

    Attributes:
        drawn: the camera rule's result; `keys` index the UNALIGNED prefix (cameras' patches, then prompt slots).
        fused: float32[J', L', R] max over the N heads of each step's query on the drawn keys.
        generated: float32[J', L', Jg] max over heads on the generated tokens' slots (0 past the step, and all 0
            for a capture of prefix keys only).
        has_generated: False when the capture kept prefix keys only.
        region_mass: float32[J', L', M'] head-mean mass on each drawn region (drawn cameras, the prompt), then the
            generated tokens (a capture fused on the device: the sum of the fused map, an upper bound).
        step_pos, layer_pos, step_labels, layer_labels: as in FusedMaps (decode steps instead of denoising steps).
        generated_ids: int64[Jg] the ids generated in the call; generated_pieces: their display pieces.
    """

    drawn: DrawnKeys
    fused: np.ndarray
    generated: np.ndarray
    has_generated: bool
    region_mass: np.ndarray
    step_pos: np.ndarray
    layer_pos: np.ndarray
    step_labels: np.ndarray
    layer_labels: np.ndarray
    generated_ids: np.ndarray
    generated_pieces: list[str]

    @property
    def regions(self) -> list[tuple[str, int, int]]:
        return self.drawn.regions


def decode_maps(bundle: DecodeBundle, *, batch_index: int = 0, step_pos: Sequence[int] | None = None,
                layer_pos: Sequence[int] | None = None) -> DecodeMaps:
    """The one fused-maps step for a decoding bundle: cameras by the one camera rule (image mask True AND the
    camera's patches get attention somewhere in the call), the non-pad prompt tokens, and the generated tokens.

    Raises FusionError (one line) for a batch index or positions out of range.
    """
    B = bundle.batch_size
    if not 0 <= batch_index < B:
        raise FusionError(f"batch_index {batch_index} out of range: the attention has batch size B = {B}")
    J, L, _, K, G, _, S = bundle.attention.shape
    d = _positions(step_pos, J, "decode step")
    l = _positions(layer_pos, L, "layer")
    N = K * G
    p_len, ppc = bundle.num_prefix_keys, bundle.patches_per_camera
    C = len(bundle.camera_names)
    rows = bundle.attention[:, :, batch_index, :, :, 0, :].reshape(J, L, N, S).astype(np.float32)  # every step
    rows = bundle.unaligned(rows, batch_index)  # prefix in the pi0 layout: camera c's patch i at c * ppc + i
    masks = np.array(bundle.image_masks, dtype=bool, copy=True)
    seen = rows[..., :C * ppc].reshape(J, L, N, C, ppc).max(axis=(0, 1, 2, 4)) > 0  # [C] over the whole call
    silent = [c for c in range(C) if masks[batch_index, c] and not seen[c]]
    masks[batch_index, silent] = False
    cams = [int(c) for c in np.flatnonzero(masks[batch_index])]
    slots = np.flatnonzero(np.asarray(bundle.token_mask[batch_index], bool)).astype(np.int64)
    keys = np.concatenate([np.arange(c * ppc, (c + 1) * ppc) for c in cams] + [C * ppc + slots]).astype(np.int64)
    regions = [(bundle.camera_names[c], i * ppc, (i + 1) * ppc) for i, c in enumerate(cams)]
    regions.append(("text", len(cams) * ppc, len(keys)))
    drawn = DrawnKeys(batch_index=batch_index, image_masks=masks, cameras=cams,
                      camera_names=[bundle.camera_names[c] for c in cams],
                      masked=[int(c) for c in np.flatnonzero(~np.asarray(bundle.image_masks[batch_index], bool))],
                      silent=silent, keys=keys, regions=regions, text_slots=slots,
                      text_pieces=[str(p) for p in np.asarray(bundle.token_pieces[batch_index])[slots]],
                      all_camera_names=list(bundle.camera_names))
    sel = rows[d][:, l]  # [J', L', N, S]
    fused = sel[..., keys].max(axis=2)
    mean = sel.mean(axis=2) if bundle.attention_heads == "all" else sel[:, :, 0]
    mass = [mean[..., keys[s:e]].sum(axis=-1) for _, s, e in regions]
    Jg = bundle.num_generated
    has_generated = bundle.attention_keys == "all"
    if has_generated:
        generated = sel[..., p_len:p_len + Jg].max(axis=2)
        mass.append(mean[..., p_len:p_len + Jg].sum(axis=-1))
    else:
        generated = np.zeros(sel.shape[:2] + (Jg,), np.float32)
        mass.append(np.zeros(sel.shape[:2], np.float32))
    return DecodeMaps(drawn=drawn, fused=np.ascontiguousarray(fused, np.float32),
                      generated=generated.astype(np.float32),
                      has_generated=has_generated, region_mass=np.stack(mass, axis=-1).astype(np.float32),
                      step_pos=d, layer_pos=l, step_labels=np.asarray(bundle.step_indices, np.int64)[d],
                      layer_labels=np.asarray(bundle.layer_indices, np.int64)[l],
                      generated_ids=np.asarray(bundle.generated_ids[batch_index], np.int64),
                      generated_pieces=bundle.pieces(batch_index))
