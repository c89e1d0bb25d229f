"""Training the small demo model that learned to look (`pi0viz.training`; extras `[jax,train]` + LIBERO).

    reach_scenes   LIBERO scenes with random object layouts, camera frames and object masks (the dataset)
    train_reach    the optax training loop on openpi's flow-matching loss (pi0viz.model.loss)
    reach_eval     held-out evaluation: reach error against prompt-blind baselines, grounding lift per step/layer
    ship_reach     evaluates a checkpoint on every held-out scene and copies it into the package
    calibrate      measures LIBERO's controller: gripper travel per control step per action unit (ACTION_UNIT_M)

The task itself (prompts, action chunks, the scene files) is `pi0viz.policy.reach_task`; the shipped model's
config and loader are `pi0viz.policy.reach_model`. See docs/reach_tiny.md.
"""
