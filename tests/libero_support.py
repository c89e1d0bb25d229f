"""Shared by the LIBERO tests: the example script loaded as a module, the files a LIBERO call's tree holds.
(Without the LIBERO extra a test calls `extras.require_libero()`.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_libero_example(name: str = "libero_example_main"):
    """examples/libero/main.py as a module registered as `name` (so its dataclasses work); a test that needs its
    own copy (own module state) passes its own name."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "libero" / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


CAMERA_FILES = {"fused_attention_on_base_0_rgb.jpg", "fused_attention_on_left_wrist_0_rgb.jpg",
                "fused_attention_on_text.jpg"}  # right_wrist_0_rgb is a padded slot in LIBERO: no file
