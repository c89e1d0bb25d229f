"""The numpy core: the capture bundle and its key layout, head fusion, images, colormaps.

Imports no model framework (no JAX, orbax, sentencepiece or torch): every backend produces a `CaptureBundle`,
and everything downstream (render, viewer, serving protocol, analysis) reads only this package.
"""
