#!/usr/bin/env bash
# Reproduce reach-tiny, the small trained pi0 that ships in src/pi0viz/assets/reach_tiny (docs/reach_tiny.md).
# One-time, on 2 CPU cores: scenes ~40 min, training ~2 h in three stages. Everything goes under cache/
# (git-ignored) until the last step copies the checkpoint, its held-out scenes and figures into the package.
#   bash scripts/train_reach_tiny.sh                 # from scratch
#   bash scripts/train_reach_tiny.sh --from-stage2   # stage 3 only, from the kept training_runs/reach_tiny_stage2

set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh jax train libero  # the model, optax, and the simulator for the scenes
PY=.venv/bin/python
SCENES=cache/reach_scenes
STAGE2=cache/reach_stage2

# 1. scenes from the LIBERO simulator (cached: existing files are kept)
$PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 200 --seed 0 --distinct  # training
$PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 24 --seed 1 --distinct   # held out
$PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 40 --seed 0 --solo       # one object

if [ "${1:-}" = "--from-stage2" ]; then
  STAGE2=training_runs/reach_tiny_stage2
else
  # all eleven kinds in view, for stages 1 and 2 (held out: seed 1)
  $PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 200 --seed 0
  $PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 16 --seed 1
  $PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --scenes-per-task 60 --seed 0 --keep 3
  ALL=(--train-glob "task_*_seed_0.npz" --held-glob "task_*_seed_1.npz")

  # 2. stage 1: the solo curriculum (the model learns where objects are)
  $PY -m pi0viz.training.train_reach --scenes $SCENES --out cache/reach_stage1 --steps 4000 --stop-at 2750 \
    --seed 0 --solo-until 0.3 --easy-floor 0.1 "${ALL[@]}" --easy-glob 'task_*_seed_0_solo.npz'

  # 3. stage 2: scenes with three objects in view join the easy pool
  $PY -m pi0viz.training.train_reach --scenes $SCENES --out $STAGE2 --init cache/reach_stage1 \
    --steps 3000 --seed 1 --solo-until 0.4 --easy-floor 0.3 "${ALL[@]}" \
    --easy-glob 'task_*_seed_0_solo.npz,task_*_seed_0_keep*.npz'
fi

# 4. stage 3: which object the prompt names, on scenes whose objects look unlike each other (DISTINCT_KINDS)
$PY -m pi0viz.training.train_reach --scenes $SCENES --out cache/reach_tiny --init $STAGE2 \
  --steps 4000 --seed 3 --solo-until 0 --easy-floor 0.1 --lr 1e-3

# 5. evaluate on all held-out scenes, next to the untrained model, and ship into the package
$PY -m pi0viz.training.ship_reach --checkpoint cache/reach_tiny --scenes $SCENES
