"""Shared by the LIBERO tests: the skip without the extra, the example script loaded as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def skip_module_without_libero() -> None:
    """Skip the calling test module when the LIBERO extra is not installed (CI installs it)."""
    from pi0viz.policy import libero_env

    if not libero_env.libero_installed():
        pytest.skip("LIBERO extra not installed: bash scripts/install-libero.sh (CI installs it via scripts/test.sh)",
                    allow_module_level=True)


def load_libero_example():
    """examples/libero/main.py as a module (registered, so its dataclasses work)."""
    spec = importlib.util.spec_from_file_location("libero_example_main", ROOT / "examples" / "libero" / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


CAMERA_FILES = {"fused_attention_on_base_0_rgb.jpg", "fused_attention_on_left_wrist_0_rgb.jpg",
                "fused_attention_on_text.jpg"}  # right_wrist_0_rgb is a padded slot in LIBERO: no file
