"""Training the small demo model that learned to look (`pi0viz.training`; extras `[jax,train]` + LIBERO).

    reach_scenes   LIBERO scenes with random object layouts, camera frames and object masks (the dataset)
    reach_task     prompts and action chunks of the reach task: the chunk moves the gripper to the named object
    flow_loss      openpi's flow-matching loss on pi0viz's JAX pi0
    train_reach    the optax training loop and the held-out evaluation (python -m pi0viz.training.train_reach)
"""
