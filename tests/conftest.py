"""Fixtures shared across test modules: one headless Chromium for every browser test, and the LIBERO scene that
the example, analysis and episode tests run in."""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"  # Debian's package; playwright drives it and downloads no browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (playwright Browser), started once per test session."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package to run the browser tests")
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
