"""The policy wing: what stands between a robot's observation and a model, for any backend.

    transforms.py   openpi's LIBERO input/output transforms (numpy) and the capture bundle of one call
    norm_stats.py   openpi's norm_stats.json and (de)normalization
    tokenizer.py    the prompt tokenizer (sentencepiece: PaliGemma's model, or the small bundled one)
    jax_policy.py   Policy: the transforms around pi0viz's JAX model (extra [jax])
    libero_env.py   the LIBERO simulator as openpi's example drives it (LIBERO extra)
    libero_frames.py  the LIBERO frames shipped for the demo
"""
