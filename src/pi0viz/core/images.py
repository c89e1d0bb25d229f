"""Image preprocessing as openpi does it for pi0: resize with centered zero padding, then [-1, 1].

`resize_with_pad` reproduces openpi-client's PIL version of `tf.image.resize_with_pad`: scale by
r = max(w / W, h / H) so the whole image fits, round each side down (`int(side / r)`), resize with PIL
bilinear, paste at (int((W - w') / 2), int((H - h') / 2)) on black. An image already H x W is returned
unchanged (LIBERO's 224 x 224 client images, and 256 x 256 -> 224 x 224 without padding).
The pad bars are ordinary image tokens to the model (not masked), so attention may land on them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_uint8_image(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """An [h, w, 3] uint8 image from uint8 HWC, float HWC in [0, 1] (x 255, clipped), or CHW input.

    Raises:
        ValueError: wrong rank/channels, non-finite floats, or an unsupported dtype (the message says which).
    """
    img = np.asarray(image)
    if img.ndim != 3:
        raise ValueError(f"{name} must be [H, W, 3] (or [3, H, W]), got shape {list(img.shape)}")
    if img.shape[-1] != 3 and img.shape[0] == 3:
        img = np.moveaxis(img, 0, -1)  # CHW -> HWC, as openpi's _parse_image does for LeRobot frames
    if img.shape[-1] != 3:
        raise ValueError(f"{name} must have 3 color channels last ([H, W, 3]), got shape {list(img.shape)}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {list(img.shape)}")
    if img.dtype == np.uint8:
        return img
    if img.dtype.kind == "f":
        if not np.isfinite(img).all():
            raise ValueError(f"{name} contains NaN or inf")
        return (np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)  # openpi-client's convert_to_uint8
    raise ValueError(f"{name} must be uint8 (0..255) or float in [0, 1], got dtype {img.dtype}")


def resize_geometry(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where a src image lands inside dst after resize-with-pad.

    Returns:
        (resized_h, resized_w), (pad_top, pad_left): the content box size and its top-left corner, pixels.
    """
    (h, w), (H, W) = src_hw, dst_hw
    if (h, w) == (H, W):
        return (H, W), (0, 0)
    ratio = max(w / W, h / H)
    rh, rw = int(h / ratio), int(w / ratio)  # floor, as openpi-client does (225 x 225 -> 223 x 223)
    return (rh, rw), (max(0, int((H - rh) / 2)), max(0, int((W - rw) / 2)))


def resize_with_pad(image: np.ndarray, height: int = 224, width: int = 224) -> np.ndarray:
    """uint8[h, w, 3] -> uint8[height, width, 3], aspect kept, bilinear, centered black padding."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"resize_with_pad expects uint8 [H, W, 3], got {img.dtype} {list(img.shape)}")
    if img.shape[:2] == (height, width):
        return img
    (rh, rw), (top, left) = resize_geometry(img.shape[:2], (height, width))
    resized = Image.fromarray(img).resize((max(rw, 1), max(rh, 1)), resample=Image.BILINEAR)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[top : top + resized.height, left : left + resized.width] = np.asarray(resized)
    return out


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 [..., h, w, 3] -> float32 in [-1, 1] (x / 255 * 2 - 1, as openpi's Observation.from_dict)."""
    return np.asarray(images, dtype=np.float32) / 255.0 * 2.0 - 1.0
