"""resize-with-pad geometry and image conversion, checked against positions computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pi0viz.core.images import (
    resize_geometry,
    resize_with_pad,
    to_model_range,
    to_uint8_image,
)


def test_geometry_by_hand():
    # 100 high x 200 wide: r = max(200/224, 100/224) = 200/224 -> 112 x 224, 56 rows of black above and below.
    assert resize_geometry((100, 200), (224, 224)) == ((112, 224), (56, 0))
    assert resize_geometry((200, 100), (224, 224)) == ((224, 112), (0, 56))
    assert resize_geometry((480, 640), (224, 224)) == ((168, 224), (28, 0))
    assert resize_geometry((256, 256), (224, 224)) == ((224, 224), (0, 0))
    # openpi-client floors: 225 / (225 / 224) is 223.99..., so 223 x 223 with a 0-pixel top/left pad.
    assert resize_geometry((225, 225), (224, 224)) == ((223, 223), (0, 0))


def test_wide_image_marked_pixel_and_centered_padding():
    img = np.full((100, 200, 3), 128, dtype=np.uint8)
    img[40:60, 90:110] = (255, 0, 0)  # a red 20 x 20 block centered at (50, 100)
    out = resize_with_pad(img, 224, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # The block scales by 224/200 = 1.12 and shifts down by 56: center (56 + 50 * 1.12, 100 * 1.12) = (112, 112).
    red = np.argwhere((out[..., 0] > 200) & (out[..., 1] < 50))
    assert np.allclose(red.mean(axis=0), (112, 112), atol=1.0)
    assert red[:, 0].min() >= 56 + 40 * 1.12 - 2 and red[:, 0].max() <= 56 + 60 * 1.12 + 1
    # Padding: exactly 0 in rows [0, 56) and [168, 224), content (128 gray) in between.
    assert (out[:56] == 0).all() and (out[168:] == 0).all()
    assert (out[57:167].max(axis=-1) > 0).all()


def test_tall_image_pads_left_and_right():
    img = np.full((200, 100, 3), 200, dtype=np.uint8)
    out = resize_with_pad(img, 224, 224)
    assert (out[:, :56] == 0).all() and (out[:, 168:] == 0).all()
    assert (out[:, 57:167] == 200).all()


def test_same_size_is_untouched_and_256_has_no_padding():
    img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert resize_with_pad(img) is img
    big = np.full((256, 256, 3), 77, dtype=np.uint8)
    out = resize_with_pad(big)
    assert out.shape == (224, 224, 3) and (out == 77).all()


def test_uint8_conversion_and_model_range():
    f = np.zeros((4, 5, 3), dtype=np.float32)
    f[0, 0] = 1.0
    f[0, 1] = 2.0  # clipped to 1
    u = to_uint8_image(f)
    assert u.dtype == np.uint8 and u[0, 0, 0] == 255 and u[0, 1, 0] == 255 and u[1, 1, 0] == 0
    chw = np.zeros((3, 6, 7), dtype=np.uint8)
    assert to_uint8_image(chw).shape == (6, 7, 3)
    x = to_model_range(np.array([0, 255, 51], dtype=np.uint8))
    assert x.dtype == np.float32 and np.allclose(x, [-1.0, 1.0, 51 / 255 * 2 - 1])
    with pytest.raises(ValueError, match="3 color channels"):
        to_uint8_image(np.zeros((8, 8, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        to_uint8_image(np.zeros((8, 8, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="NaN"):
        to_uint8_image(np.full((8, 8, 3), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        to_uint8_image(np.zeros((8, 3), dtype=np.uint8))
