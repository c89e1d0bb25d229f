"""SigLIP patch embedding: the model runs openpi's op (a VALID, stride-14 convolution), which equals the einsum
over patches in float32 and puts token p at patch (p // 16, p % 16)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pi0viz.model import Pi0Config, init_params
from pi0viz.model.siglip import encode_images, patch_embed, patchify


def _random(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_conv_equals_einsum_over_patches_in_float32():
    """Same values up to float32 summation order: 588 products per output with sum |terms| ~ 10, so rounding
    errors up to a few 1e-6 (absolute); a wrong kernel layout or patch order would differ by O(1)."""
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, 224, 224, 3)).astype(np.float32)
    kernel, bias = _random(1, (14, 14, 3, 32)) / np.sqrt(588), _random(2, (32,))
    conv = np.asarray(patch_embed(jnp.asarray(images), jnp.asarray(kernel), jnp.asarray(bias)))
    patches = patchify(jnp.asarray(images), (14, 14))  # [B, 256, 14, 14, 3]
    einsum = np.asarray(jnp.einsum("BPhwc,hwcW->BPW", patches, kernel, precision=jax.lax.Precision.HIGHEST) + bias)
    exact = np.einsum("BPhwc,hwcW->BPW", np.asarray(patches, np.float64), kernel.astype(np.float64)) + bias
    assert conv.shape == (2, 256, 32)
    np.testing.assert_allclose(conv, einsum, rtol=0, atol=5e-6)
    np.testing.assert_allclose(conv, exact, rtol=0, atol=5e-6)


def test_token_order_is_row_major_over_patches():
    """A kernel that copies pixel (3, 5) of its patch into channel 0: token p must hold the pixel of patch row
    p // 16, column p % 16."""
    images = _random(3, (1, 224, 224, 3))
    kernel = np.zeros((14, 14, 3, 4), np.float32)
    kernel[3, 5, 1, 0] = 1.0
    out = np.asarray(patch_embed(jnp.asarray(images), jnp.asarray(kernel), jnp.zeros(4)))
    want = images[0, 3::14, 5::14, 1].reshape(256)
    np.testing.assert_array_equal(out[0, :, 0], want)
    assert not out[0, :, 1:].any()


def test_the_model_runs_the_convolution():
    config = Pi0Config.tiny()
    img = init_params(config, jax.random.key(0))["PaliGemma"]["img"]
    for dtype in (jnp.float32, jnp.bfloat16):
        jaxpr = str(jax.make_jaxpr(lambda x: encode_images(img, x, config.siglip, dtype))(jnp.zeros((1, 224, 224, 3))))
        assert "conv_general_dilated" in jaxpr, dtype
        assert "precision=None" in jaxpr.split("conv_general_dilated", 1)[1][:600]  # flax's default, as openpi
