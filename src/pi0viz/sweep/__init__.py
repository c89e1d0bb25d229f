"""Whole LIBERO evaluations with attention, on Ray: the same code on one machine and on a cluster.

    plan.py        what to run: episode keys (suite, task, trial, seed) and the sweep's settings
    store.py       the run folder: one compact record per episode, written atomically; resume = skip done keys
    disk.py        expected bytes (records, videos, JPEG trees) and the refusal when the disk cannot hold them
    policy_actor.py  the policy as a Ray actor: tiny / checkpoint JAX pi0, or a client of a `pi0viz serve` endpoint
    attention.py   the attention work of one call: fused float16 maps, region masses, optional bundle and JPEG tree
    rollout.py     the LIBERO env worker (a Ray actor): openpi's episode loop, attention handed off with backpressure
    finish.py      one episode's record (and rollout video) from its calls' attention results
    engine.py      the driver: Ray start, actors, scheduling, worker deaths, progress
    metrics_hook.py  grounding scalars of one call (pi0viz.analysis) from the object masks of its frames
    results.py     per-task success table and grounding means (results.json / results.md); per named object (reach)
    reach.py       the reach suite: reach-tiny's task in closed loop (settled random layouts, success by distance)
    cli.py         `pi0viz sweep`

Needs the [sweep] extra (Ray; `bash scripts/install.sh sweep`) and the LIBERO extra. See docs/sweep.md.
"""
