"""The one way a test asks for something optional: an extra, the client venv, Chromium, a tmpfs mount.

Locally a missing piece skips the test with the command that installs it. When CI runs (`CI=true`, set by .ci/run)
the same call fails the test instead: a failed install must not give a green run. conftest.py also fails the session
under CI=true if any test was skipped for a missing extra some other way (a bare `pytest.importorskip`).

    rr = require("rerun", "rerun")                      # module-level: the module, or skip / fail
    require_that(libero_installed(), "libero", "the LIBERO simulator")
"""

from __future__ import annotations

import importlib
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENT_PY = Path(os.environ.get("PI0VIZ_CLIENT_VENV", ROOT / ".venv-client")) / "bin" / "python"
MISSING = "missing:"  # every skip reason from here starts with this (conftest.py counts them under CI)


def in_ci() -> bool:
    """True when the tests run in CI (`CI` set to true/1/yes, as CI services and .ci/run do)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(extra: str, what: str) -> NoReturn:
    """Skip (locally) or fail (under CI=true) the calling test or module: `what` is absent; `extra` names the
    argument of scripts/install.sh that provides it (or a sentence saying how to get it)."""
    how = f"bash scripts/install.sh {extra}" if " " not in extra else extra
    reason = f"{MISSING} {what} ({how})"
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require(module: str, extra: str) -> ModuleType:
    """`module` imported, or `missing(extra, ...)`. Any import failure counts (a broken install as much as none)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        problem = f"{module} ({type(err).__name__}: {err})"
    missing(extra, problem)  # outside the except: no chained traceback in the report


def require_that(ok: bool, extra: str, what: str) -> None:
    """`missing(extra, what)` unless `ok`."""
    if not ok:
        missing(extra, what)


def require_libero() -> None:
    """The LIBERO simulator with its scene assets (bash scripts/install.sh libero)."""
    from pi0viz.policy import libero_env

    require_that(libero_env.libero_installed(), "libero", "the LIBERO simulator")


def client_python() -> Path:
    """The python of .venv-client, where openpi's own client runs (numpy < 2)."""
    require_that(CLIENT_PY.exists(), "openpi-client", f"openpi-client's venv {CLIENT_PY.parent.parent}")
    return CLIENT_PY


def mount_tmpfs(path: Path, options: str) -> Path:
    """A tmpfs mounted at `path` (created) with mount `options` (e.g. "size=1m"); needs root. The caller unmounts
    (`umount -l`)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        missing("run the tests as root (CI does)", f"a tmpfs mount ({options}: {r.stderr.strip()})")
    return path


def unmount(path: Path) -> None:
    """Lazily unmount what `mount_tmpfs` mounted (never raises: the test's own failure is what matters)."""
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
