"""Synthetic capture bundles with attention you control: for tests, benchmarks and docs.

`synthetic_bundle` builds a valid bundle whose attention is a thin uniform spread over the valid keys,
so that hot spots placed with `place_hot_key` are the unambiguous maxima of their cells.
"""

from __future__ import annotations

import numpy as np

from pi0viz.core.bundle import CaptureBundle

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
