"""The policy wing: what stands between a robot's observation and a model, for any backend.

    transforms.py   small transforms (numpy), composed into input/output chains as openpi does
    configs.py      the named configs and the transform chains each one runs (make_transforms)
    spec.py         the one policy spec: tiny, reach-tiny, checkpoint:DIR, lerobot:DIR, ws://HOST:PORT
    norm_stats.py   openpi's norm_stats.json and (de)normalization
    tokenizer.py    the prompt tokenizer (sentencepiece: PaliGemma's model, or the small bundled one)
    jax_policy.py   Policy: a JAX model and its transform chains (extra [jax])
    lerobot_policy.py  a LeRobot checkpoint behind the same interface, sharing the chain code (extra [torch])
    reach_model.py  reach-tiny, the small trained pi0 that ships with pi0viz
    libero_env.py   the LIBERO simulator as openpi's example drives it (LIBERO extra)
    libero_frames.py  the LIBERO frames shipped for the demo
"""
