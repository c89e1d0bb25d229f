"""Let torchvision import beside a CPU-only torch when its compiled ops cannot load (test environment only).

On the test machine the only torchvision 0.28.0 wheel is a CUDA build; beside the CPU torch 2.13.0 its `_C`
extension does not load, and `torchvision/_meta_registrations.py` then fails at import time registering fake
kernels for ops that do not exist ("operator torchvision::nms does not exist"). LeRobot imports torchvision
unconditionally, so nothing of LeRobot imports. pi0 never calls those compiled ops (nms, roi_align, ...).

Installed by scripts/install.sh torch as a module plus a `.pth` line that calls `install()`. `install()` only
puts a finder on `sys.meta_path`; torch is touched when (and only when) something imports torchvision, so
Python start-up in the venv stays as fast as before.
"""

from __future__ import annotations

import functools
import importlib.abc
import sys


def _tolerant_register_fake(real):
    """Wrap torch.library.register_fake: a missing `torchvision::` op is skipped instead of raising."""

    def is_missing_op(err: RuntimeError) -> bool:
        return "torchvision::" in str(err) and "does not exist" in str(err)

    @functools.wraps(real)
    def register_fake(op, func=None, /, *args, **kwargs):
        if not (isinstance(op, str) and op.startswith("torchvision::")):
            return real(op, func, *args, **kwargs)
        if func is not None:
            try:
                return real(op, func, *args, **kwargs)
            except RuntimeError as err:
                if is_missing_op(err):
                    return func
                raise
        decorate = real(op, None, *args, **kwargs)

        def register(fn):
            try:
                return decorate(fn)
            except RuntimeError as err:
                if is_missing_op(err):
                    return fn
                raise

        return register

    register_fake._pi0viz_shim = True
    return register_fake


class _PatchBeforeTorchvision(importlib.abc.MetaPathFinder):
    """Patches torch.library the first time torchvision is looked up, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            import torch.library

            if not getattr(torch.library.register_fake, "_pi0viz_shim", False):
                torch.library.register_fake = _tolerant_register_fake(torch.library.register_fake)
        # the normal finders load torchvision


def install() -> None:
    """Arm the finder (idempotent)."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _PatchBeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchBeforeTorchvision())
