"""From raw suffix attention to what the renderer draws: probabilities, head fusion, color levels.

Word axes (see pi0viz.core.bundle): step (D), layer (L), batch (B), kv head (K), head per kv head (G), query (Q),
key (S); action (A = the action-token queries), query head (N = K * G), region (one per camera, then the prompt).

The pipeline, all vectorized numpy over the whole call:

    attention [D, L, B, K, G, Q, S]
      -> probabilities   (logits: mask + softmax per row; probs: checked to sum to 1 over valid keys)
      -> fused           [D, L, A, R]   max over the N heads, action rows only, the R keys that are drawn
      -> levels          [D, L, A, R]   uint8 colormap indices under the chosen color scale

R ("render keys") are the keys of the unmasked cameras followed by the valid (non-pad) prompt tokens; masked
cameras, pads, the state and the action keys are never drawn. The work runs one denoising step at a time so
that a float32 pi0 call (255 MB of attention) never needs more than a few step-sized temporaries.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Literal, Sequence

import numpy as np

from pi0viz.core.layout import AttentionLayout
from pi0viz.errors import FusionError

ScaleScope = Literal["cell", "region", "layer", "global"]
SCALE_SCOPES: tuple[str, ...] = ("cell", "region", "layer", "global")
NUM_LEVELS = 256  # colormap lookup-table size: levels are uint8



# -- validity ------------------------------------------------------------------------------------------


def key_validity(layout: AttentionLayout, image_masks: np.ndarray, token_mask: np.ndarray) -> np.ndarray:
    """Which keys each suffix query may attend to, exactly as pi0 masks its suffix pass.

    Args:
        layout: the key/query layout of the capture.
        image_masks: [B, C] bool, False for a padded camera slot (all its patch keys are masked).
        token_mask: [B, T] bool, False for prompt padding.

    Returns:
        [B, Q, S] bool. Prefix keys follow the padding masks for every query. In the suffix, pi0's
        block-causal mask lets the state token(s) see only the state keys, while every action query sees
        the state and all action keys (openpi pi0.py make_attn_mask with ar_mask [True, True, False...]).
    """
    B = image_masks.shape[0]
    P, T = layout.patches_per_camera, layout.num_text_tokens
    cams = np.repeat(image_masks.astype(bool), P, axis=1)  # [B, C * P]
    prefix = np.concatenate([cams, token_mask.astype(bool)], axis=1)  # [B, Sp]
    valid = np.zeros((B, layout.num_queries, layout.num_keys), bool)
    valid[:, :, : prefix.shape[1]] = prefix[:, None, :]
    state, action = layout.state_region, layout.action_region
    if state is None or action is None:  # prefix keys only: nothing else to mask
        return valid
    actions = layout.action_queries()
    valid[:, :, state.slice] = True  # every suffix query sees the state block
    valid[:, actions, action.slice] = True  # actions see each other (bidirectional block)
    return valid


def render_key_index(layout: AttentionLayout, image_mask: np.ndarray, token_mask: np.ndarray,
                     cameras: Sequence[int] | None = None) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """The keys that are drawn for one batch element, and where each region sits among them.

    Args:
        image_mask: [C] bool for this batch element; masked cameras are left out.
        token_mask: [T] bool; pads are left out.
        cameras: camera slots to keep (default all unmasked).

    Returns:
        (keys [R] int64 indices into S, regions [(name, start, stop)] ranges into R): the kept cameras in token
        order, then "text" (the valid prompt tokens, possibly empty).
    """
    keep = range(layout.num_cameras) if cameras is None else cameras
    parts: list[np.ndarray] = []
    regions: list[tuple[str, int, int]] = []
    start = 0
    for c in keep:
        if not image_mask[c]:
            continue
        region = layout.camera_region(c)
        parts.append(np.arange(region.start, region.stop))
        regions.append((region.name, start, start + len(region)))
        start += len(region)
    text = layout.text_region.start + np.flatnonzero(np.asarray(token_mask, bool))
    parts.append(text)
    regions.append(("text", start, start + len(text)))
    return np.concatenate(parts).astype(np.int64), regions


def padded_cameras(attention: np.ndarray, layout: AttentionLayout, image_masks: np.ndarray, *,
                   kind: Literal["probs", "logits"] = "probs", batch_index: int = 0) -> list[int]:
    """Camera slots that are padded although `image_masks` says they are not: no action query ever attends to them.

    openpi's masks make every probability on a padded camera's keys exactly 0 (and leave its logits at the mask
    value, -2.38e38, or -inf), in every step, layer and head. A real camera never gets exactly 0 everywhere
    (softmax weights are positive), so such a camera is known to be padded from the attention itself, even when
    the caller passed no image masks.

    Args:
        attention: float16/float32[D, L, B, K, G, Q, S].
        image_masks: bool[B, C]; cameras already masked are not reported again.
    Returns:
        the slots c with image_masks[batch_index, c] True whose keys never receive attention.
    """
    actions = layout.action_queries()
    out = []
    for c in range(layout.num_cameras):
        if not image_masks[batch_index, c]:
            continue
        keys = layout.camera_region(c).slice
        silent = True
        for d in range(attention.shape[0]):  # one step at a time: no call-sized temporaries
            block = attention[d, :, batch_index, :, :, actions, keys]
            top = float(block.max()) if block.size else 0.0
            if (top > -1e30) if kind == "logits" else (top != 0.0 or float(block.min()) != 0.0):
                silent = False
                break
        if silent:
            out.append(c)
    return out


# -- probabilities -------------------------------------------------------------------------------------


def logits_to_probs(logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Softmax per row over the valid keys, as pi0 does (masked keys get exactly 0).

    Args:
        logits: [..., B, K, G, Q, S] pre-softmax scaled scores (any float dtype).
        valid: [B, Q, S] bool from `key_validity`.

    Returns:
        float32 probabilities of the same shape. Rows without any valid key are all 0 (pi0 would make them
        uniform garbage; nothing in them is meaningful).
    """
    x = np.asarray(logits, dtype=np.float32)
    mask = valid[:, None, None]  # [B, 1, 1, Q, S] broadcast over K, G
    x = np.where(mask, x, -np.inf)
    peak = x.max(axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    x -= peak  # the usual shift: exp never overflows
    np.exp(x, out=x)
    total = x.sum(axis=-1, keepdims=True)
    x /= np.where(total > 0, total, 1.0)
    return x


def _row_groups(valid: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per batch element: (query indices, float32 key mask) for each distinct row of valid [B, Q, S]."""
    groups = []
    for b in range(valid.shape[0]):
        rows, row_of = np.unique(valid[b], axis=0, return_inverse=True)
        row_of = row_of.reshape(-1)
        groups.append([(np.flatnonzero(row_of == r), row.astype(np.float32)) for r, row in enumerate(rows)])
    return groups


def check_probabilities(probs: np.ndarray, valid: np.ndarray, *, sums_to_one: bool = True,
                        atol: float = 0.02, _groups: list | None = None) -> None:
    """Raise FusionError unless `probs` looks like softmax output: in [0, 1], ~0 on masked keys, rows sum to 1.

    Args:
        probs: [..., B, K, G, Q, S] (one step's worth or the whole call).
        valid: [B, Q, S] bool.
        sums_to_one: False for reduced captures (prefix keys only, heads already max-fused), where a row
            may hold less (or, fused, more) than 1; then only the range is checked.
        atol: tolerance for the row sums; 0.02 leaves room for bfloat16 rounding (8 mantissa bits) of 867 keys.
    """
    p = np.asarray(probs)
    lo, hi = float(p.min()), float(p.max())
    hint = ("if these are pre-softmax scores, pass attention_kind='logits'; if the heads were already max-fused "
            "(K = G = 1), pass attention_heads='max'")
    if lo < -atol or hi > 1 + atol:
        raise FusionError(f"attention_kind='probs' but values span [{lo:.4g}, {hi:.4g}], outside [0, 1]; {hint}")
    if not sums_to_one:
        return
    # Mass on valid keys, one matmul per distinct row mask (pi0 has two: the state row and the action rows),
    # instead of masked copies of the whole array.
    inside = np.empty(p.shape[:-1], np.float32)  # [..., B, K, G, Q]
    for b, groups in enumerate(_groups if _groups is not None else _row_groups(valid)):
        for q, row in groups:
            inside[..., b, :, :, q] = np.asarray(p[..., b, :, :, q, :], dtype=np.float32) @ row
    outside = p.sum(axis=-1, dtype=np.float32) - inside
    leak = float(outside.max()) if outside.size else 0.0
    if leak > atol:
        raise FusionError(
            f"attention_kind='probs' but up to {leak:.3g} of a row's mass sits on masked keys (masked cameras, "
            f"pads, or action keys seen by the state query); expected ~0. Check image_masks/token_mask, or {hint}"
        )
    has_keys = valid.any(axis=-1)[:, None, None]  # [B, 1, 1, Q]: rows with no valid key carry nothing
    bad = has_keys & (np.abs(inside - 1) > atol)
    if bad.any():
        worst = float(np.abs(inside - 1)[has_keys & bad].max())
        raise FusionError(
            f"attention_kind='probs' but {int(bad.sum())} rows do not sum to 1 over their valid keys "
            f"(worst |sum - 1| = {worst:.3g}, tolerance {atol}); {hint}, or check camera/token masks"
        )


def fuse_heads(probs: np.ndarray, layout: AttentionLayout) -> np.ndarray:
    """Max over all query heads, action rows only: a key that any head attends to is hot.

    Args:
        probs: [D, L, B, K, G, Q, S] probabilities.

    Returns:
        [D, L, B, A, S] with A = layout.num_action_tokens, same dtype as `probs`.
    """
    return probs[..., layout.action_queries(), :].max(axis=(3, 4))


# -- the whole call ------------------------------------------------------------------------------------


@dataclasses.dataclass
class FusedStep:
    """One denoising step of one batch element: the single fusion pass that the renderer's captions, the viewer
    and the analysis all read, so "max" and "mass" are the same numbers everywhere.

    Attributes:
        heads: float32[L, N, A, R] per-head probabilities of the action queries on the drawn keys.
        fused: float32[L, A, R] max over the N heads.
        layout_mass: float32[L, A, N, M] probability mass of each head on each key region of the layout
            (M = layout.regions(): every camera slot, the prompt, then state and action keys when captured),
            summed over every key of the region. Masked keys hold exactly 0, so a drawn region's mass is the
            mass of its layout region.
        rows: [L, K, G, A, S] the step's probabilities of the action queries on every key (a view, the capture's
            dtype for probs, float32 for logits): what pi0viz.core.maps reduces for the analysis.
    """

    heads: np.ndarray
    fused: np.ndarray
    layout_mass: np.ndarray
    rows: np.ndarray | None = None


def fuse_steps(attention: np.ndarray, layout: AttentionLayout, image_masks: np.ndarray, token_mask: np.ndarray, *,
               kind: Literal["probs", "logits"] = "probs", heads_fused: bool = False, batch_index: int = 0,
               check: bool = True, atol: float = 0.02, drawn: bool = True) -> Iterator[FusedStep]:
    """Probabilities, validity check and head fusion for one batch element, one denoising step at a time.

    Args:
        attention: float16/float32[D, L, B, K, G, Q, S] probabilities or logits.
        layout: key/query layout (layout.keys == "prefix" and heads_fused=True describe reduced captures).
        image_masks: bool[B, C]. token_mask: bool[B, T].
        kind: "probs" (post-softmax; checked) or "logits" (pre-softmax; masked and softmaxed here).
        heads_fused: True when K = G = 1 hold a max over heads made at capture time (N = 1 then).
        batch_index: which batch element to fuse.
        drawn: False skips the drawn-key maps (heads, fused, layout_mass are then None) for callers that reduce
            `rows` over every key themselves (pi0viz.core.maps.action_key_maps).

    Yields:
        D FusedSteps in order. Peak extra memory is a few float32 copies of ONE step (pi0: 25 MB each).
    """
    D, L, B, K, G, Q, S = attention.shape
    if not 0 <= batch_index < B:
        raise FusionError(f"batch_index {batch_index} out of range: the attention has batch size B = {B}")
    if _has_bad_values(attention, allow_neg_inf=kind == "logits"):
        raise FusionError("attention contains NaN or inf; expected finite probabilities (or, for logits, "
                          "finite scores where -inf may mark masked keys)")
    if kind == "logits" and (layout.keys == "prefix" or heads_fused):
        raise FusionError("attention_kind='logits' needs every key and head to softmax over; this capture is "
                          f"reduced (keys={layout.keys!r}, heads fused={heads_fused}). Capture probs instead")
    b = slice(batch_index, batch_index + 1)
    valid = key_validity(layout, image_masks[b], token_mask[b])  # [1, Q, S]
    keys, _ = render_key_index(layout, image_masks[batch_index], token_mask[batch_index])
    actions = layout.action_queries()
    A, R, N = layout.num_action_tokens, len(keys), K * G
    regions = layout.regions()
    groups = _row_groups(valid)  # once per call, not per step
    for d in range(D):
        chunk = attention[d, :, b]  # [L, 1, K, G, Q, S]
        if kind == "logits":
            chunk = logits_to_probs(chunk, valid)
        elif check:
            check_probabilities(chunk, valid, sums_to_one=not heads_fused and layout.keys == "all", atol=atol,
                                _groups=groups)
        rows = chunk[:, 0, :, :, actions]  # [L, K, G, A, S]
        if not drawn:
            yield FusedStep(heads=None, fused=None, layout_mass=None, rows=rows)  # type: ignore[arg-type]
            continue
        heads = _take_keys(rows, keys).reshape(L, N, A, R)  # float32
        mass = np.stack([rows[..., r.start:r.stop].sum(axis=-1, dtype=np.float32) for r in regions], axis=-1)
        yield FusedStep(heads=heads, fused=heads.max(axis=1),
                        layout_mass=mass.reshape(L, N, A, len(regions)).transpose(0, 2, 1, 3), rows=rows)


@dataclasses.dataclass
class FusedCall:
    """One batch element's fused attention over the drawn keys (all D steps of `fuse_steps` gathered).

    Attributes:
        fused: float32[D, L, A, R], max over heads of the probability on each drawn key.
        heads: float32[D, L, A, N, R] per-head probabilities, or None unless asked for.
        region_mass: float32[D, L, A, N] probability mass on each drawn region (cameras kept, then text),
            averaged over heads: the share of attention that region actually received (absolute, in [0, 1]).
            For a capture whose heads were max-fused on the device, the sum of the fused map instead (an
            upper bound: the per-head masses are gone).
        keys: int64[R] indices into S of the drawn keys.
        regions: [(name, start, stop)] ranges into R, one per drawn camera, then "text".
    """

    fused: np.ndarray
    heads: np.ndarray | None
    region_mass: np.ndarray
    keys: np.ndarray
    regions: list[tuple[str, int, int]]


def drawn_region_index(layout: AttentionLayout, regions: Sequence[tuple[str, int, int]]) -> list[int]:
    """For each drawn region (cameras by name, then "text"), its index in layout.regions()."""
    names = [r.name for r in layout.regions()]
    text = next(i for i, r in enumerate(layout.regions()) if r.kind == "text")
    return [names.index(n) for n, _, _ in regions[:-1]] + [text]


def fuse_call(attention: np.ndarray, layout: AttentionLayout, image_masks: np.ndarray, token_mask: np.ndarray, *,
              kind: Literal["probs", "logits"] = "probs", heads_fused: bool = False, batch_index: int = 0,
              keep_heads: bool = False, check: bool = True, atol: float = 0.02) -> FusedCall:
    """`fuse_steps` over the whole call. Args as there; keep_heads also returns the per-head maps."""
    D, L = attention.shape[:2]
    keys, regions = render_key_index(layout, image_masks[batch_index], token_mask[batch_index])
    A, R, N = layout.num_action_tokens, len(keys), attention.shape[3] * attention.shape[4]
    fused = np.empty((D, L, A, R), np.float32)
    heads = np.empty((D, L, A, N, R), np.float32) if keep_heads else None
    mass = np.empty((D, L, A, len(regions)), np.float32)
    drawn = drawn_region_index(layout, regions)
    steps = fuse_steps(attention, layout, image_masks, token_mask, kind=kind, heads_fused=heads_fused,
                       batch_index=batch_index, check=check, atol=atol)
    for d, step in enumerate(steps):
        fused[d] = step.fused
        if heads is not None:
            heads[d] = step.heads.transpose(0, 2, 1, 3)
        mass[d] = step.layout_mass[..., drawn].mean(axis=2)
    return FusedCall(fused=fused, heads=heads, region_mass=mass, keys=keys, regions=regions)


def _take_keys(x: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """x[..., keys] as float32, copying contiguous runs of keys as slices (cameras and prompt are runs)."""
    breaks = np.flatnonzero(np.diff(keys) != 1) + 1
    runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(keys, breaks) if len(r)]
    out = np.empty(x.shape[:-1] + (len(keys),), np.float32)
    at = 0
    for start, stop in runs:
        out[..., at:at + stop - start] = x[..., start:stop]
        at += stop - start
    return out


def _has_bad_values(a: np.ndarray, *, allow_neg_inf: bool) -> bool:
    # One float64 sum per step instead of elementwise tests: it is NaN if any value is NaN (or +inf meets -inf),
    # +inf if any value is +inf, -inf if any is -inf (finite probabilities or scores cannot overflow it).
    for d in range(a.shape[0]):
        total = float(a[d].sum(dtype=np.float64))
        if np.isnan(total) or total == np.inf or (total == -np.inf and not allow_neg_inf):
            return True
    return False


# -- color scales ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ColorScale:
    """How probabilities map to colormap levels. Absolute values always appear in the captions.

    Attributes:
        scope: which values share one top of the scale:
            "cell"   all regions of a cell (every camera + text) share it (default): a camera that no head
                     looks at stays cold next to one that is looked at;
            "region" each camera and the text get their own top (shows structure inside a cold region);
            "layer"  one top per layer over all steps and action tokens (compare steps and tokens);
            "global" one top for the whole call (compare everything).
        percentile: top of the scale = this percentile of the values in the scope instead of their max
            (e.g. 99.0); values above it saturate. None = max.
        gamma: level = (p / top) ** gamma; < 1 lifts faint attention.
        log_decades: if set, level = 1 + log10(p / top) / decades, clipped to [0, 1] (e.g. 3: 1e-3 * top
            and below are the coldest color). Overrides gamma.
    """

    scope: ScaleScope = "cell"
    percentile: float | None = None
    gamma: float = 1.0
    log_decades: float | None = None

    def __post_init__(self) -> None:
        if self.scope not in SCALE_SCOPES:
            raise FusionError(f"unknown color scale {self.scope!r}; expected one of {list(SCALE_SCOPES)}")
        if self.percentile is not None and not 0 < self.percentile <= 100:
            raise FusionError(f"percentile must be in (0, 100], got {self.percentile}")
        if not 0 < self.gamma < np.inf:
            raise FusionError(f"gamma must be a finite number > 0, got {self.gamma}")
        if self.log_decades is not None and not 0 < self.log_decades < np.inf:
            raise FusionError(f"log_decades must be a finite number > 0, got {self.log_decades}")


def scale_tops(fused: np.ndarray, regions: Sequence[tuple[str, int, int]], scale: ColorScale) -> np.ndarray:
    """Top of the color scale for every cell and region.

    Args:
        fused: [D, L, A, R] fused probabilities over the drawn keys.
        regions: [(name, start, stop)] ranges into R.

    Returns:
        [D, L, A, N] float32, one top per cell and region (N = len(regions)), broadcast from the scope.
    """
    D, L, A, R = fused.shape
    N = len(regions)

    def top(values: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
        if values.shape[-1] == 0:  # e.g. an empty prompt region
            return np.zeros(np.delete(values.shape, axis), np.float32)
        if scale.percentile is None:
            return values.max(axis=axis)
        return np.percentile(values, scale.percentile, axis=axis).astype(np.float32)

    if scale.scope == "cell":
        out = np.broadcast_to(top(fused, (3,))[..., None], (D, L, A, N))
    elif scale.scope == "region":
        out = np.stack([top(fused[..., s:e], (3,)) for _, s, e in regions], axis=-1)
    elif scale.scope == "layer":
        per_layer = top(fused.transpose(1, 0, 2, 3).reshape(L, -1), (1,))  # [L]
        out = np.broadcast_to(per_layer[None, :, None, None], (D, L, A, N))
    else:
        out = np.full((D, L, A, N), top(fused.reshape(-1), (0,)), np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def to_levels(values: np.ndarray, tops: np.ndarray, regions: Sequence[tuple[str, int, int]],
              scale: ColorScale) -> np.ndarray:
    """Colormap indices for every drawn key of every cell.

    Args:
        values: [D, L, A, (N,) R] fused (or per-head) probabilities.
        tops: [D, L, A, N] from `scale_tops`.

    Returns:
        uint8 array of the shape of `values`: 0 = coldest, 255 = the top of the scale (or above).
    """
    per_key = np.empty(tops.shape[:3] + (values.shape[-1],), np.float32)  # [D, L, A, R]
    for n, (_, start, stop) in enumerate(regions):
        per_key[..., start:stop] = tops[..., n:n + 1]
    if values.ndim == 5:  # per-head values [D, L, A, N, R]
        per_key = per_key[:, :, :, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(per_key > 0, values / per_key, 0.0).astype(np.float32)
    np.clip(norm, 0.0, 1.0, out=norm)
    if scale.log_decades is not None:
        with np.errstate(divide="ignore"):
            norm = 1.0 + np.log10(np.maximum(norm, 1e-30)) / scale.log_decades
        np.clip(norm, 0.0, 1.0, out=norm)
    elif scale.gamma != 1.0:
        np.power(norm, scale.gamma, out=norm)
    norm *= NUM_LEVELS - 1
    norm += 0.5
    return norm.astype(np.uint8)
