"""Colormaps as lookup tables: 256 RGB rows, indexed by the uint8 levels from pi0viz.core.fusion.

The default is matplotlib's 'inferno': perceptually uniform with lightness rising monotonically from black
(no attention) to pale yellow (the top of the scale), so "hot" reads the same in color, in grayscale and for
color-blind readers, and a cold camera simply looks dark. 'turbo' has a more saturated top, but its lightness
rises and then falls again (both ends are dark), so a dark pixel would be ambiguous; it stays available.
matplotlib is only asked for the table; nothing is plotted with it.
"""

from __future__ import annotations

import numpy as np

from pi0viz.errors import ColormapError

DEFAULT_COLORMAP = "inferno"
COLORMAPS = ("inferno", "magma", "viridis", "turbo")  # offered by the CLI and the viewer; the first is the default



def colormap_lut(name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """The colormap `name` sampled at 256 levels.

    Returns:
        [256, 3] uint8 RGB; row 0 is the coldest color, row 255 the hottest.
    """
    import matplotlib  # the table only; importing pyplot would be slow and needs no display

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ColormapError(
            f"unknown colormap {name!r}; try 'inferno' (default), 'magma', 'viridis' or 'turbo'") from None
    rgba = cmap(np.linspace(0.0, 1.0, 256))  # [256, 4] floats in [0, 1]
    return np.round(rgba[:, :3] * 255).astype(np.uint8)


def readable_ink(lut: np.ndarray) -> np.ndarray:
    """Text color that stays readable on each LUT color: black on light backgrounds, white on dark.

    Returns:
        [256, 3] uint8.
    """
    luma = lut.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 luma, 0..255
    return np.where((luma > 128)[:, None], 0, 255).astype(np.uint8).repeat(3, axis=1)
