#!/usr/bin/env bash
# Install everything the tests need (scripts/install.sh: .venv and .venv-client), then run the tests.
#   bash scripts/test.sh            # the whole suite, as CI runs it (.ci/run)
#   bash scripts/test.sh -k render  # extra arguments go to pytest
# Under CI=true a test that needs a missing extra fails instead of skipping (tests/extras.py).
set -euo pipefail
cd "$(dirname "$0")/.."

# The extras the tests exercise for real: the JAX model and training, pytest + playwright, headless Chromium, the
# torch capture on LeRobot, the LIBERO simulator, the MP4 and .rrd writers, Ray, and openpi's own client.
bash scripts/install.sh jax train test chromium torch libero video rerun sweep openpi-client

exec .venv/bin/python -m pytest "$@"
