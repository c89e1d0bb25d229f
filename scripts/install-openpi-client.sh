#!/usr/bin/env bash
# A separate venv, .venv-client, holding openpi's own client (openpi-client 0.1.2 from PyPI) for the protocol tests.
#   bash scripts/install-openpi-client.sh     # quick no-op when already installed
#
# Why a second environment: openpi-client pins numpy<2 while JAX (pi0viz's model) needs numpy>=2, so they cannot
# share one venv. openpi runs the same way: policy server and LIBERO client in separate environments.
# pi0viz itself goes in with --no-deps: its bundle/serving-protocol helpers need only numpy and msgpack, so a
# client can rebuild attention bundles without JAX.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PI0VIZ_CLIENT_VENV:-.venv-client}
PY="$VENV/bin/python"

if [ -x "$PY" ] && "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
import numpy, openpi_client.websocket_client_policy, pi0viz.serving.protocol
sys.exit(0 if md.version("openpi-client") == "0.1.2" and numpy.__version__.startswith("1.") else 1)
EOF
then
  echo "install-openpi-client.sh: openpi-client already installed in $VENV"
  exit 0
fi

start=$(date +%s)
[ -x "$PY" ] || "${PYTHON:-python3}" -m venv "$VENV"
# typing_extensions: imported by openpi-client but not declared by it.
pip_install() {  # pip, minus this machine's "local index location is ignored" chatter; fails when pip fails
  "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  return "${PIPESTATUS[0]}"
}
pip_install openpi-client==0.1.2 typing_extensions
pip_install --no-deps -e .
"$PY" -c "import numpy, openpi_client.websocket_client_policy, pi0viz.serving.protocol; assert numpy.__version__ < '2'"
echo "install-openpi-client.sh: openpi-client 0.1.2 installed in $VENV in $(( $(date +%s) - start )) s"
