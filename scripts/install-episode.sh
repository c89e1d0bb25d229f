#!/usr/bin/env bash
# Install the optional parts of pi0viz.episode into the project's .venv: imageio + imageio-ffmpeg (the MP4,
# extra [video]) and rerun-sdk (the .rrd and the reader the tests check it with, extra [rerun]). rerun-sdk stays in
# LeRobot 0.4's range (>=0.24,<0.27) so that the [torch] side's LeRobot and this share one venv.
#   bash scripts/install-episode.sh          # quick no-op when already installed
#   PI0VIZ_VENV=/path/to/venv bash scripts/install-episode.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PI0VIZ_VENV:-.venv}
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install-episode.sh: no venv at $VENV (run scripts/test.sh or create it first)" >&2; exit 1; }

if "$PY" - <<'PYEOF' 2>/dev/null
import importlib.metadata as md, importlib.util, sys
major, minor = (int(x) for x in md.version("rerun-sdk").split(".")[:2])
ok = (0, 24) <= (major, minor) < (0, 27) and all(importlib.util.find_spec(m) for m in ("imageio", "imageio_ffmpeg"))
sys.exit(0 if ok else 1)
PYEOF
then
  echo "install-episode.sh: video and rerun extras already installed in $VENV"
  exit 0
fi

start=$(date +%s)
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
printf 'numpy>=2\n' >"$CONSTRAINTS"  # JAX needs numpy 2: never let an extra pull it back
"$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" \
  "imageio>=2.34" "imageio-ffmpeg>=0.5" "rerun-sdk>=0.24,<0.27" 2>&1 | { grep -v "is ignored: it is neither" || true; }
echo "install-episode.sh: video and rerun extras installed in $VENV in $(( $(date +%s) - start )) s"
