#!/usr/bin/env bash
# Install the [torch] test extra into the project's .venv: CPU torch 2.13.0, LeRobot 0.4.4 (pi0 / pi0.5) and what
# LeRobot needs at run time, stock transformers 4.53.2 plus pi0viz's compat module for it, and a torchvision shim.
#   bash scripts/install-torch.sh          # quick no-op when already installed
#   PI0VIZ_VENV=/path/to/venv bash scripts/install-torch.sh
#
# Why so manual (measured recipe: ../shared/docs/pytorch-setup.md, docs/torch.md):
# - LeRobot 0.4.4 is the newest release for Python 3.11 and pins torch < 2.11, which would pull a multi-GB CUDA
#   build; it runs with the CPU torch 2.13.0, so it goes in with --no-deps plus the imports it needs to load.
# - LeRobot's pi0 / pi0.5 refuse to build on stock transformers 4.53.2: they were written against openpi's modified
#   copy of it (adaRMS norms, KV cache read without update, ...). scripts/torch_env/pi0viz_transformers_compat.py
#   (pi0viz's own code, armed by a .pth file) adds exactly what they use when transformers' gemma / paligemma /
#   siglip modules load; transformers stays stock on disk. An older install of this script patched transformers'
#   files in place (openpi's diff): that is detected and stock transformers reinstalled.
# - The reachable torchvision 0.28.0 wheel is a CUDA build whose compiled ops cannot load beside the CPU torch;
#   scripts/torch_env/pi0viz_torchvision_shim.py (armed by a .pth file) lets it import anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PI0VIZ_VENV:-.venv}
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "install-torch.sh: no venv at $VENV (run scripts/test.sh or create it first)" >&2; exit 1; }
SP=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
SHIMS=(pi0viz_torchvision_shim pi0viz_transformers_compat)
TF="$SP/transformers/models"

# The old in-place patch left these behind: its added check.py, and _gated_residual in modeling_gemma.py.
patched_transformers() {
  [ -f "$TF/siglip/check.py" ] || grep -qs "_gated_residual" "$TF/gemma/modeling_gemma.py"
}

# Fast path: pinned versions present, transformers stock, shims current. No torch import (seconds saved).
if ! patched_transformers && "$PY" - "$SP" "${SHIMS[@]}" <<'EOF_CHECK' 2>/dev/null
import filecmp, importlib.metadata as md, importlib.util, pathlib, sys
sp, shims = pathlib.Path(sys.argv[1]), sys.argv[2:]
want = {"torch": "2.13.0+cpu", "lerobot": "0.4.4", "transformers": "4.53.2", "torchvision": "0.28.0"}
ok = all(md.version(n).startswith(v) for n, v in want.items()) and importlib.util.find_spec("gymnasium") is not None
for name in shims:
    ok = ok and (sp / f"{name}.pth").is_file()
    ok = ok and filecmp.cmp(sp / f"{name}.py", f"scripts/torch_env/{name}.py", shallow=False)
sys.exit(0 if ok else 1)
EOF_CHECK
then
  echo "install-torch.sh: torch extra already installed in $VENV"
  exit 0
fi

start=$(date +%s)
# pip, minus this machine's "local index location is ignored" chatter and the resolver's list of what the
# --no-deps LeRobot declares but does not need here (torch < 2.11, wandb, ...); fails when pip fails.
pip_install() {
  "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | {
    grep -v -e "is ignored: it is neither" -e "^lerobot 0.4.4 requires" -e "dependency resolver does not currently" \
      || true; }
  return "${PIPESTATUS[0]}"
}
pip_install torch==2.13.0
pip_install --no-deps lerobot==0.4.4 torchvision==0.28.0
# LeRobot's imports on the pi0 path (lerobot.policies imports every policy, groot's diffusers included; its policy
# processors import lerobot.envs, hence gymnasium).
pip_install transformers==4.53.2 "huggingface-hub>=0.34.2,<0.36" "datasets>=4,<5" draccus==0.10.0 \
  "diffusers>=0.27.2,<0.36" "accelerate>=1.10,<2" psutil "Pillow>=10,<13" "imageio>=2.34,<3" \
  "pyserial>=3.5,<4" "deepdiff>=7.0.1,<9" "av>=15,<16" "einops>=0.8,<0.9" safetensors \
  "gymnasium>=1.1.1,<2"

if patched_transformers; then
  # Back to the stock files: check.py is not in the wheel's RECORD (a reinstall would leave it), old .pyc go too.
  echo "install-torch.sh: replacing the patched transformers with stock 4.53.2"
  rm -f "$TF/siglip/check.py"
  find "$TF/gemma" "$TF/paligemma" "$TF/siglip" -name '*.pyc' -delete
  pip_install --force-reinstall --no-deps transformers==4.53.2
fi
for name in "${SHIMS[@]}"; do
  cp "scripts/torch_env/$name.py" "$SP/$name.py"
  echo "import $name; $name.install()" >"$SP/$name.pth"
done

"$PY" -c "from lerobot.policies.pi0.modeling_pi0 import PI0Policy; from lerobot.policies.pi05.modeling_pi05 import PI05Policy"
echo "install-torch.sh: torch extra installed in $VENV in $(( $(date +%s) - start )) s"
