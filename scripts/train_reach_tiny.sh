#!/usr/bin/env bash
# Reproduce reach-tiny, the small trained pi0 that ships in src/pi0viz/assets/reach_tiny (docs/reach_tiny.md).
# One-time, on 2 CPU cores: scenes ~40 min + ~60 min of closed-loop frames, training ~2.5 h in four stages, the
# closed-loop gate ~1 h. Everything goes under cache/
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

# 5. stage 4, closed loop: frames along scripted reaches from random start poses (10 tasks x 48 reaches x 8 calls
#    = 3,840 frames, ~6 min per task; held out: 6 reaches per task with another seed), then the approach chunks
#    from each frame's pose in the measured unit, from stage 3's weights (~31 min at ~0.52 s per step)
$PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --distinct --loop 8 --scenes-per-task 48 --seed 0
$PY -m pi0viz.training.reach_scenes --out $SCENES --tasks 0-9 --distinct --loop 8 --scenes-per-task 6 --seed 1
$PY -m pi0viz.training.train_reach --scenes $SCENES --out cache/reach_loop --init cache/reach_tiny \
  --chunk approach --steps 3500 --seed 5 --lr 5e-4 --solo-until 0 --easy-floor 0 --easy-glob '' \
  --train-glob 'task_*_seed_0_loop_distinct.npz' --held-glob 'task_*_seed_1_loop_distinct.npz'

# 6. the closed-loop gate: the model and both baselines on the same 50 held-out episodes in the simulator
#    (new layouts from the episode keys, seed 11; ~20 min each on 2 cores without videos)
G=(sweep --suite reach --policy checkpoint:cache/reach_loop --episodes-per-task 5 --seed 11 --no-video)
$PY -m pi0viz.cli "${G[@]}" --out cache/reach_gate/model
$PY -m pi0viz.cli "${G[@]}" --reach-baseline untrained --out cache/reach_gate/untrained
$PY -m pi0viz.cli "${G[@]}" --reach-baseline prompt-blind --out cache/reach_gate/prompt_blind

# 7. evaluate on every held-out frame next to the untrained model and, if both gates pass, ship into the package
#    (the package's held-out scenes, which the demo and the tests use, stay as they are)
$PY -m pi0viz.training.ship_reach --checkpoint cache/reach_loop --scenes $SCENES --keep-scenes \
  --train-glob 'task_*_seed_0_loop_distinct.npz' --held-glob 'task_*_seed_1_loop_distinct.npz' \
  --closed-loop cache/reach_gate/model cache/reach_gate/untrained cache/reach_gate/prompt_blind
