"""Fixtures shared across test modules: one headless Chromium for every browser test, the LIBERO scene that the
example, analysis and episode tests run in, a small episode folder; and the CI rule: under CI=true a test skipped for
a missing extra fails the session (tests/extras.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from extras import MISSING, in_ci, missing

CHROMIUM = "/usr/bin/chromium"  # Debian's package; playwright drives it and downloads no browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (playwright Browser), started once per test session."""
    if not os.path.exists(CHROMIUM):
        missing("chromium", f"{CHROMIUM} (Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def scene():
    """(env, prompt, init_state) of libero_spatial task 0, seed 7; one env per test module."""
    from pi0viz.policy import libero_env

    suite = libero_env.task_suite("libero_spatial")
    env, prompt = libero_env.make_env(suite, 0, seed=7)
    yield env, prompt, suite.get_task_init_states(0)[0]
    env.close()


@pytest.fixture(scope="module")
def example():
    """examples/libero/main.py as a module."""
    from libero_support import load_libero_example

    return load_libero_example()


@pytest.fixture(scope="module")
def episode_dir(tmp_path_factory) -> Path:
    """A small episode folder (tests/episode_support.py): bundles/inference_NNN.npz and frames.npz."""
    from episode_support import write_episode

    return write_episode(tmp_path_factory.mktemp("episode"))


# -- CI: a skip for a missing extra fails the run -----------------------------------------------------------------

# Skip reasons that mean "an optional part is not installed": tests/extras.py's, and pytest.importorskip's own.
_EXTRA_SKIPS = (MISSING, "could not import", "scripts/install.sh")
_extra_skips: list[str] = []


def _skip_reason(report) -> str | None:
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return None
    return str(report.longrepr[2]).removeprefix("Skipped: ")


def _note_skip(report) -> None:
    reason = _skip_reason(report)
    if reason is not None and any(mark in reason for mark in _EXTRA_SKIPS):
        _extra_skips.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report) -> None:
    _note_skip(report)


def pytest_collectreport(report) -> None:
    _note_skip(report)  # a module skipped whole at import


def pytest_sessionfinish(session, exitstatus) -> None:
    if in_ci() and _extra_skips and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if in_ci() and _extra_skips:
        terminalreporter.section("CI=true: tests skipped for a missing extra (the run fails)", red=True)
        for line in _extra_skips:
            terminalreporter.line(line)
