#!/usr/bin/env bash
# Install the sweep extra (Ray) into the project's .venv: `pi0viz sweep` runs whole LIBERO evaluations on Ray.
#   bash scripts/install-ray.sh          # quick no-op when already installed
#   PI0VIZ_VENV=/path/to/venv bash scripts/install-ray.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PI0VIZ_VENV:-.venv}
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install-ray.sh: no venv at $VENV (run scripts/test.sh or create it first)" >&2; exit 1; }
if "$PY" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('ray') else 1)" 2>/dev/null; then
  echo "install-ray.sh: Ray already installed in $VENV"
  exit 0
fi
start=$(date +%s)
# Plain `ray` (core only: tasks, actors, the local scheduler); no dashboard, no Ray Serve/Tune extras.
"$PY" -m pip install -q --disable-pip-version-check "ray>=2.40" 2>&1 | { grep -v "is ignored: it is neither" || true; }
"$PY" -c "import ray; print('install-ray.sh: Ray', ray.__version__, 'installed in $VENV in', $(date +%s) - $start, 's')"
