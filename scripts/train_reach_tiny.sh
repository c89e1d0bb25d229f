#!/usr/bin/env bash
# Reproduce reach-tiny, the small trained pi0 that ships in src/pi0viz/assets/reach_tiny (docs/reach_tiny.md).
# One-time, on 2 CPU cores: scenes ~25 min, training ~70 min. Everything goes under cache/ (git-ignored) until
# the last step copies the checkpoint, its held-out scenes and figures into the package.
#   bash scripts/train_reach_tiny.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[jax,train]"
bash scripts/install-libero.sh
PY=.venv/bin/python
SCENES=cache/reach_scenes

# 1. scenes from the LIBERO simulator (cached: existing files are kept)
$PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 200 --seed 0          # training
$PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 40 --seed 0 --solo     # one object
$PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 16 --seed 1            # held out

# 2. stage 1: the solo curriculum (the model learns where objects are)
$PY -m pi0viz.training.train_reach --scenes $SCENES --out cache/reach_stage1 --steps 4000 --stop-at 2750 \
  --seed 0 --solo-until 0.3 --easy-floor 0.1

# 3. stage 2: scenes with three objects in view join the easy pool (which object the prompt names)
$PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 60 --seed 0 --keep 3
$PY -m pi0viz.training.train_reach --scenes $SCENES --out cache/reach_tiny --init cache/reach_stage1 \
  --steps 3000 --seed 1 --solo-until 0.4 --easy-floor 0.3

# 4. evaluate on all held-out scenes, next to the untrained model, and ship into the package
$PY -m pi0viz.training.ship_reach --checkpoint cache/reach_tiny --scenes $SCENES
