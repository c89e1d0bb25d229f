"""Synthetic capture bundles with attention you control: for tests, benchmarks and docs.

`synthetic_bundle` builds a valid bundle whose attention is a thin uniform spread over the valid keys,
so that hot spots placed with `place_hot_key` are the unambiguous maxima of their cells. The pi0-FAST analogue:
`synthetic_decode_bundle` (a decoding bundle, openpi's aligned kv-cache layout) and `place_hot_decode_key`.
"""

from __future__ import annotations

import numpy as np

from pi0viz.core.bundle import CaptureBundle
from pi0viz.core.decode_bundle import DecodeBundle

PI0_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


def synthetic_bundle(
    *,
    num_steps: int = 10,
    num_layers: int = 18,
    batch: int = 1,
    num_heads: int = 8,
    camera_names: tuple[str, ...] = PI0_CAMERAS,
    image_masks: tuple[bool, ...] | None = None,
    patch_grid: tuple[int, int] = (16, 16),
    image_size: int = 224,
    num_text_tokens: int = 48,
    num_valid_text: int = 12,
    num_state_tokens: int = 1,
    num_action_tokens: int = 50,
    dtype: type = np.float32,
    seed: int = 0,
) -> CaptureBundle:
    """A pi0-shaped (by default) bundle: [D, L, B, 1, G, Q, S] probabilities, thin and valid.

    Every valid key gets a small random weight; masked keys (masked cameras, pad tokens, and action keys
    for the state query, as in pi0's block-causal suffix mask) get exactly 0; rows sum to 1.
    """
    rng = np.random.default_rng(seed)
    C = len(camera_names)
    masks = np.ones((batch, C), bool) if image_masks is None else np.tile(np.asarray(image_masks, bool), (batch, 1))
    P = patch_grid[0] * patch_grid[1]
    T = num_text_tokens
    Q = num_state_tokens + num_action_tokens
    S = C * P + T + Q
    token_mask = np.zeros((batch, T), bool)
    token_mask[:, :num_valid_text] = True

    valid = np.zeros((batch, Q, S), bool)  # [B, Q, S]
    for b in range(batch):
        for c in range(C):
            valid[b, :, c * P:(c + 1) * P] = masks[b, c]
        valid[b, :, C * P:C * P + T] = token_mask[b]
        valid[b, :, C * P + T:C * P + T + num_state_tokens] = True
        valid[b, num_state_tokens:, C * P + T + num_state_tokens:] = True  # actions see actions
        for s in range(num_state_tokens):  # the state token sees only itself in the suffix
            valid[b, s, C * P + T + s] = True
    att = rng.uniform(0.5, 1.0, size=(num_steps, num_layers, batch, 1, num_heads, Q, S)).astype(np.float32)
    att *= valid[None, None, :, None, None]
    att /= att.sum(-1, keepdims=True)

    yy, xx = np.mgrid[0:image_size, 0:image_size]
    images = np.zeros((batch, C, image_size, image_size, 3), np.uint8)
    for c in range(C):
        images[:, c, ..., 0] = (xx * 255 // image_size).astype(np.uint8)
        images[:, c, ..., 1] = (yy * 255 // image_size).astype(np.uint8)
        images[:, c, ..., 2] = 80 * c
    images[~masks] = 0  # padded camera slots are zero images, as in openpi
    words = ["pick", "up", "the", "black", "bowl", "between", "the", "plate", "and", "the", "ramekin", "and",
             "place", "it", "on", "the", "plate"]
    pieces = np.full((batch, T), "", dtype="<U16")
    ids = np.zeros((batch, T), np.int32)
    for b in range(batch):
        for t in range(num_valid_text):
            pieces[b, t] = "<bos>" if t == 0 else ("\n" if t == num_valid_text - 1 else "▁" + words[(t - 1) % len(words)])
            ids[b, t] = 2 if t == 0 else 100 + t
    times = (1.0 - 0.1 * np.arange(num_steps)).astype(np.float32)
    return CaptureBundle(
        attention=att.astype(dtype),
        camera_names=list(camera_names),
        images=images,
        image_masks=masks,
        token_ids=ids,
        token_pieces=pieces,
        token_mask=token_mask,
        num_state_tokens=num_state_tokens,
        num_action_tokens=num_action_tokens,
        diffusion_times=times,
        patch_grid=patch_grid,
        prompt=np.asarray([" ".join(words[: max(num_valid_text - 2, 0)])] * batch),
    )


def place_hot_key(bundle: CaptureBundle, *, step: int, layer: int, action_token: int, head: int, key: int,
                  mass: float, batch: int = 0) -> None:
    """Give `mass` of one head's attention (cell step/layer/action_token) to key index `key`, in place.

    The remaining 1 - mass is spread over the row's other valid keys in proportion to their old weights,
    so the row stays a probability distribution and masked keys stay exactly 0.
    """
    q = bundle.layout.action_query(action_token)
    row = bundle.attention[step, layer, batch, 0, head, q].astype(np.float64)
    if row[key] == 0:
        raise ValueError(f"key {key} is masked in this row; put the hot spot on a valid key")
    rest = row.copy()
    rest[key] = 0
    rest *= (1.0 - mass) / rest.sum()
    rest[key] = mass
    bundle.attention[step, layer, batch, 0, head, q] = rest.astype(bundle.attention.dtype)


def synthetic_decode_bundle(
    *,
    num_steps: int = 8,
    num_layers: int = 4,
    batch: int = 1,
    num_heads: int = 4,
    camera_names: tuple[str, ...] = PI0_CAMERAS,
    image_masks: tuple[bool, ...] | None = None,
    patch_grid: tuple[int, int] = (16, 16),
    image_size: int = 224,
    num_text_tokens: int = 48,
    num_valid_text: int = 12,
    keys: str = "all",
    dtype: type = np.float32,
    seed: int = 0,
    inference_step: int | None = None,
) -> DecodeBundle:
    """A pi0-FAST-shaped decoding bundle (pi0viz.capture/2) laid out as openpi lays out its kv cache.

    The prefix is aligned left to right as openpi does (each element's P slots rolled so that the prompt padding
    sits in front and the last valid token in slot P - 1; prefix_start = P - valid prefix slots; a masked camera's
    slots count as invalid but stay where the roll puts them). Decode step j's query (generated token j) gets a small
    random weight on every slot in [prefix_start, P + j] (openpi's decode mask: a masked camera's keys at or after
    prefix_start ARE attended) and exactly 0 elsewhere; rows sum to 1. Attention float[J, L, B, 1, G, 1, S],
    S = P + J (keys "all") or P (keys "prefix"); J = num_steps tokens generated, all stored.
    """
    rng = np.random.default_rng(seed)
    C, J, T = len(camera_names), num_steps, num_text_tokens
    masks = np.ones((batch, C), bool) if image_masks is None else np.tile(np.asarray(image_masks, bool), (batch, 1))
    ppc = patch_grid[0] * patch_grid[1]
    P = C * ppc + T
    token_mask = np.zeros((batch, T), bool)
    token_mask[:, :num_valid_text] = True
    prefix_valid = np.concatenate([np.repeat(masks, ppc, axis=1), token_mask], axis=1)  # [B, P] unaligned
    shift = 1 + np.array([np.flatnonzero(v)[-1] for v in prefix_valid])  # [B]
    source = (np.arange(P)[None] + shift[:, None]) % P  # aligned slot s holds unaligned index source[b, s]
    prefix_start = P - prefix_valid.sum(axis=1)
    S = P + J
    slots = np.arange(S)
    reach = (slots[None, None] >= prefix_start[:, None, None]) & (slots[None, None] <= P + np.arange(J)[None, :, None])
    att = rng.uniform(0.5, 1.0, size=(J, num_layers, batch, 1, num_heads, 1, S)).astype(np.float32)
    att *= reach.transpose(1, 0, 2)[:, None, :, None, None, None, :]  # [J, 1, B, 1, 1, 1, S]
    att /= att.sum(-1, keepdims=True)
    if keys == "prefix":
        att = att[..., :P]
    ref = synthetic_bundle(num_steps=1, num_layers=1, batch=batch, num_heads=1, camera_names=camera_names,
                           image_masks=image_masks, patch_grid=patch_grid, image_size=image_size,
                           num_text_tokens=T, num_valid_text=num_valid_text, num_action_tokens=1, seed=seed)
    generated = (256000 + rng.integers(0, 1000, size=(batch, J))).astype(np.int32)
    return DecodeBundle(
        attention=att.astype(dtype), camera_names=list(camera_names), images=ref.images, image_masks=masks,
        token_ids=ref.token_ids, token_pieces=ref.token_pieces, token_mask=token_mask, generated_ids=generated,
        key_len=(P + 1 + np.arange(J)).astype(np.int32), prefix_start=prefix_start.astype(np.int32),
        key_source=source.astype(np.int32), patch_grid=patch_grid,
        attention_keys="prefix" if keys == "prefix" else "all",
        generated_pieces=np.array([[f"a{j}" for j in range(J)]] * batch), prompt=ref.prompt,
        inference_step=inference_step)


def place_hot_decode_key(bundle: DecodeBundle, *, step: int, layer: int, head: int, key: int, mass: float,
                         batch: int = 0) -> None:
    """Give `mass` of one head's attention (decode step position `step`, layer `layer`) to key `key`, in place.

    `key` is an UNALIGNED index (pi0's key layout: camera c's patch i at c x rows x cols + i, then the prompt slots;
    P + i for generated token i); it is mapped to its kv-cache slot through `bundle.key_source`. The remaining
    1 - mass is spread over the row's other attended slots in proportion to their old weights, so the row stays a
    probability distribution and unattended slots stay exactly 0.
    """
    P = bundle.num_prefix_keys
    slot = int(np.flatnonzero(bundle.key_source[batch] == key)[0]) if key < P else int(key)
    row = bundle.attention[step, layer, batch, 0, head, 0].astype(np.float64)
    if row[slot] == 0:
        raise ValueError(f"key {key} (slot {slot}) is not attended in this row; put the hot spot on an attended key")
    rest = row.copy()
    rest[slot] = 0
    rest *= (1.0 - mass) / rest.sum()
    rest[slot] = mass
    bundle.attention[step, layer, batch, 0, head, 0] = rest.astype(bundle.attention.dtype)
