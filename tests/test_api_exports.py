"""The public names of `pi0viz`: `from pi0viz import *` works, every name in __all__ resolves (the lazy ones that
need an extra too), none is listed twice, and `import pi0viz` alone loads no model framework."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

from extras import require

import pi0viz

# Policy (the JAX backend) and capture_attention (the PyTorch backend) resolve only with their extras installed.
BACKENDS = (("jax", "jax"), ("torch", "torch"))


def _require_backends() -> None:
    for module, extra in BACKENDS:
        require(module, extra)


def _run(code: str) -> str:
    """Run `code` in a fresh interpreter (nothing imported yet) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_star_import_works_and_binds_every_public_name() -> None:
    _require_backends()
    out = _run("import json\nfrom pi0viz import *\nimport pi0viz\n"
               "print(json.dumps([n for n in pi0viz.__all__ if n not in globals()]))")
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_every_name_in_all_resolves_and_is_listed_once() -> None:
    _require_backends()
    names = list(pi0viz.__all__)
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert "VisualizeOptions" not in names  # a name that never existed
    for name in names:
        value = getattr(pi0viz, name)  # the lazy ones import their module (and its extra) here
        assert value is not None, name
    for name, (module, attr) in pi0viz._LAZY.items():  # each lazy entry points at the object it claims
        assert getattr(importlib.import_module(module), attr) is getattr(pi0viz, name)
        assert name in names


def test_unknown_names_raise_attribute_error() -> None:
    try:
        pi0viz.VisualizeOptions  # noqa: B018
    except AttributeError as err:
        assert "VisualizeOptions" in str(err)
    else:
        raise AssertionError("pi0viz.VisualizeOptions should not exist")


def test_plain_import_loads_no_model_framework_nor_renderer() -> None:
    out = _run("import json, sys\nimport pi0viz\n"
               "print(json.dumps([m for m in ('jax', 'torch', 'orbax', 'sentencepiece', 'pi0viz.render.engine') "
               "if m in sys.modules]))")
    assert json.loads(out.strip().splitlines()[-1]) == []
