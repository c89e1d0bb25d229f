#!/usr/bin/env bash
# Install everything the tests need into .venv (and the side environments), then run the tests.
#   bash scripts/test.sh            # the whole suite, as CI runs it
#   bash scripts/test.sh -k render  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[jax,train,test]"

# Headless Chromium for the viewer tests: Debian's package, driven by playwright (which downloads nothing).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "scripts/test.sh: chromium missing; install Debian's 'chromium' package (viewer tests will skip)" >&2
  fi
fi

# Optional heavy parts that the tests exercise for real: LIBERO (in .venv) and openpi-client (own venv,
# it pins numpy<2 while JAX needs numpy>=2).
[ -f scripts/install-libero.sh ] && bash scripts/install-libero.sh
[ -f scripts/install-openpi-client.sh ] && bash scripts/install-openpi-client.sh
# The episode extras: imageio-ffmpeg (attention MP4) and rerun-sdk (.rrd), both read back by the tests.
[ -f scripts/install-episode.sh ] && bash scripts/install-episode.sh
# The torch extra: CPU torch, LeRobot 0.4.4, stock transformers + pi0viz's compat module (docs/torch.md).
[ -f scripts/install-torch.sh ] && bash scripts/install-torch.sh
[ -f scripts/install-ray.sh ] && bash scripts/install-ray.sh  # the [sweep] extra: Ray for `pi0viz sweep`

exec .venv/bin/python -m pytest "$@"
