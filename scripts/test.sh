#!/usr/bin/env bash
# Install everything the tests need (scripts/install.sh: .venv, .venv-client and the PyTorch stacks' venvs), then run
# the tests: the whole suite in .venv (LeRobot 0.4.4 is its PyTorch stack), then the torch test modules
# (tests/test_torch_*.py) again under each other PyTorch stack's venv (the test matrix, tests/torch_stacks.py):
#   .venv-lerobot06   LeRobot 0.6.1 on Python 3.12          PI0VIZ_TORCH_STACK=lerobot06
#   .venv-hf          transformers' native PI0 (5.23.0)     PI0VIZ_TORCH_STACK=hf-native
#   bash scripts/test.sh                 # everything, as CI runs it (.ci/run)
#   bash scripts/test.sh -k render       # extra arguments go to every pytest run (a -k that selects no torch test
#                                        # leaves the matrix runs empty, which is fine then)
#   bash scripts/test.sh tests/test_x.py # test paths: .venv runs them; the matrix runs the torch modules among them
#   PI0VIZ_TEST_MATRIX=0 bash scripts/test.sh   # .venv only (no LeRobot 0.6.1 / native PI0 venvs installed or run)
# Under CI=true a test that needs a missing extra or stack fails instead of skipping (tests/extras.py).
set -euo pipefail
cd "$(dirname "$0")/.."

MATRIX=${PI0VIZ_TEST_MATRIX:-1}
STACKS=()
[ "$MATRIX" = 0 ] || STACKS=(lerobot06:.venv-lerobot06 hf-native:.venv-hf)

# The extras the tests exercise for real: the JAX model and training, pytest + playwright, headless Chromium, the
# torch capture on LeRobot 0.4.4, the LIBERO simulator, the MP4 and .rrd writers, Ray, openpi's own client; and the
# other PyTorch stacks, each in its venv.
bash scripts/install.sh jax train test chromium torch libero video rerun sweep openpi-client
# The stacks' venvs (mostly downloads: 2.9 GB for LeRobot 0.6.1) install niced while the suite runs in .venv.
stack_log=$(mktemp)
trap 'rm -f "$stack_log"' EXIT
if [ "$MATRIX" != 0 ]; then
  nice -n 10 bash scripts/install.sh lerobot06 hf-pi0 >"$stack_log" 2>&1 &
  stack_install=$!
fi

# Test paths among the arguments go to .venv as given; the matrix runs the torch modules (all, or those named).
paths=() opts=()
for arg in "$@"; do
  if [[ $arg == tests/* || $arg == tests ]] && [ -e "${arg%%::*}" ]; then paths+=("$arg"); else opts+=("$arg"); fi
done
torch_paths=()
if [ ${#paths[@]} -eq 0 ]; then
  torch_paths=(tests/test_torch_*.py)
else
  for p in "${paths[@]}"; do
    case ${p%%::*} in
      tests | tests/) torch_paths=(tests/test_torch_*.py); break ;;
      tests/test_torch_*) torch_paths+=("$p") ;;
    esac
  done
fi

status=0
PI0VIZ_TORCH_STACK=lerobot044 .venv/bin/python -m pytest "$@" || status=$?
if [ "$MATRIX" != 0 ]; then
  install_rc=0
  wait "$stack_install" || install_rc=$?
  cat "$stack_log"
  [ "$install_rc" -eq 0 ] || { echo "scripts/test.sh: installing the PyTorch stacks failed (exit $install_rc)" >&2; exit 1; }
fi
for entry in "${STACKS[@]}"; do
  [ ${#torch_paths[@]} -gt 0 ] || break
  stack=${entry%%:*} venv=${entry#*:}
  echo "== the torch tests under $stack ($venv) =="
  start=$(date +%s)
  rc=0
  PI0VIZ_TORCH_STACK=$stack "$venv/bin/python" -m pytest -p no:cacheprovider "${opts[@]}" "${torch_paths[@]}" || rc=$?
  echo "== $stack: exit $rc in $(( $(date +%s) - start )) s =="
  # pytest's 5 is "no test collected": only a -k / -m of the caller's can make a whole module list select none.
  if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 5 ] && [ $# -gt 0 ]; }; then status=$rc; fi
done
exit "$status"
