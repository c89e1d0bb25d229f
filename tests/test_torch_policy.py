"""A LeRobot checkpoint folder (tiny pi0, LeRobot's own processor pipelines) behind pi0viz: in process, through the
policy server (openpi's protocol), and in the LIBERO example with the real simulator: in process (`--policy
lerobot:DIR`) where LIBERO shares the venv (LeRobot 0.4.4), through `pi0viz serve --lerobot DIR` run in this venv
otherwise (LeRobot 0.6.1: Python 3.12; the example runs in .venv, where LIBERO is). Runs under each LeRobot stack
(tests/torch_stacks.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from extras import ROOT, require_libero, require_that
from libero_support import load_libero_example
from torch_stacks import LEROBOT044, LEROBOT06, LEROBOT_STACKS, only, require_stack

stack = require_stack(*LEROBOT_STACKS)  # native PI0's policy entry: test_torch_native.py

import torch
import torch_support as ts

from pi0viz.policy.libero_frames import load_libero_frames


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.set_num_threads(1)  # shared 2-core machine: one spinning thread per core is ~10x slower
    root = tmp_path_factory.mktemp("lerobot")
    return ts.save_libero_checkpoint("pi0", root / "pi0_libero_tiny", root / "tokenizer")


@pytest.fixture(scope="module")
def policy(checkpoint):
    from pi0viz.policy.lerobot_policy import LeRobotPolicy

    with ts.tiny_variant("pi0"):  # LeRobot's from_pretrained builds the model from the config's variant names
        return LeRobotPolicy.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def request_():
    frame = load_libero_frames()[0]  # real LIBERO frames, as openpi's client sends them
    return frame.observation()


def test_checkpoint_round_trip_keeps_the_openpi_weights(policy):
    q = ts.reference_params("pi0")["PaliGemma/llm/layers/attn/q_einsum_1/w"]  # [L, N, D, H]
    got = policy.policy.model.paligemma_with_expert.gemma_expert.model.layers[3].self_attn.q_proj.weight
    np.testing.assert_array_equal(got.detach().numpy()[2 * 16 + 5], q[3, 2, :, 5])
    # save_pretrained stores the tied embedding once (as lm_head); LeRobot's strict load complains but the tie
    # fills the embedding: check it did.
    table = ts.reference_params("pi0")["PaliGemma/llm/embedder/input_embedding"]
    embed = policy.policy.model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight
    np.testing.assert_array_equal(embed.detach().numpy()[108], table[108])


def test_infer_runs_lerobot_pipelines_and_returns_the_bundle(policy, request_):
    torch.manual_seed(0)
    plain = policy.infer(request_)
    torch.manual_seed(0)
    out = policy.infer(request_, return_bundle=True, inference_step=4)
    np.testing.assert_array_equal(out["actions"], plain["actions"])  # the hooks do not change the computation
    assert out["actions"].shape == (50, 7)
    b = out["attention_bundle"]
    assert b.camera_names == ["image", "image2"] and b.image_masks.tolist() == [[True, True]]
    np.testing.assert_array_equal(b.images[0, 0], request_["observation/image"])
    np.testing.assert_array_equal(b.images[0, 1], request_["observation/wrist_image"])
    assert b.attention.shape == (10, 4, 1, 1, 8, 51, 2 * 256 + 48 + 51) and b.inference_step == 4
    # LeRobot's tokenizer step wrote the prompt (plus its newline) into the tokens; pieces decode it back.
    text = "".join(b.token_pieces[0][b.token_mask[0]]).replace("\u2581", " ")
    assert request_["prompt"].lower() in text.lower() and text.endswith("\n")
    np.testing.assert_array_equal(b.actions[0], out["actions"])


def test_pi05_checkpoint_gets_the_state_into_its_prompt(tmp_path_factory, request_):
    from pi0viz.policy.lerobot_policy import LeRobotPolicy

    root = tmp_path_factory.mktemp("lerobot05")
    folder = ts.save_libero_checkpoint("pi05", root / "pi05_libero_tiny", root / "tokenizer")
    with ts.tiny_variant("pi05"):
        policy = LeRobotPolicy.from_pretrained(folder)
    out = policy.infer(request_, return_bundle=True, capture=policy.capture_options(action_rows_only=True))
    b = out["attention_bundle"]
    assert out["actions"].shape == (10, 7) and (b.num_state_tokens, b.num_action_tokens) == (0, 10)
    assert b.attention.shape == (10, 4, 1, 1, 8, 10, 2 * 256 + 200 + 10)
    # LeRobot's pi0.5 pipeline writes the discretized state into the prompt (no state token in the suffix).
    text = "".join(b.token_pieces[0][b.token_mask[0]]).replace("\u2581", " ")
    assert "State" in text and request_["prompt"].lower() in text.lower()


def test_server_serves_a_lerobot_policy_with_fused_heads(policy, request_):
    from pi0viz.serving.client import PolicyClient
    from pi0viz.serving.server import PolicyServer
    from pi0viz.torch_capture import CaptureOptions

    server = PolicyServer(policy, port=0)
    server.start_in_thread()
    try:
        client = PolicyClient("127.0.0.1", server.port)
        out = client.infer(request_, return_attention=True, inference_step=1, fuse_heads=True)
        client.close()
    finally:
        server.stop()
    b = out["attention_bundle"]
    assert b.attention_heads == "max" and b.attention.shape == (10, 4, 1, 1, 1, 51, 611)
    assert np.asarray(out["actions"]).shape == (50, 7)
    assert isinstance(policy.capture_options(fuse_heads=True), CaptureOptions)  # no JAX options for torch


def test_serve_command_faults_are_one_line(tmp_path):
    from click.testing import CliRunner

    from pi0viz.cli import main

    both = CliRunner().invoke(main, ["serve", "--lerobot", str(tmp_path), "--tiny"])
    assert both.exit_code == 1 and "exactly one of --checkpoint DIR, --lerobot DIR or --tiny" in both.output
    empty = CliRunner().invoke(main, ["serve", "--lerobot", str(tmp_path)])
    assert empty.exit_code == 1 and "is not a LeRobot checkpoint folder" in empty.output
    assert "Traceback" not in both.output + empty.output


def test_lerobot_folder_that_is_not_a_checkpoint_is_one_clear_error(tmp_path):
    from pi0viz.errors import CheckpointError
    from pi0viz.policy.lerobot_policy import LeRobotPolicy

    with pytest.raises(CheckpointError, match="not a LeRobot checkpoint folder"):
        LeRobotPolicy.from_pretrained(tmp_path)


@only(LEROBOT044)  # LIBERO lives in .venv (Python 3.11); 0.6.1's episode goes through the server (below)
@pytest.mark.libero
@pytest.mark.slow
def test_libero_example_runs_a_lerobot_checkpoint(checkpoint, tmp_path):
    from pi0viz.core.bundle import load_bundle
    from pi0viz.policy import libero_env

    require_libero()
    example = load_libero_example("libero_example_main_torch")
    args = example.Args(policy=f"lerobot:{checkpoint}", max_inference_calls=1, bundles_only=True, fuse_heads=True)
    with ts.tiny_variant("pi0"):
        policy = example.make_policy(args)
    suite = libero_env.task_suite("libero_spatial")
    env, prompt = libero_env.make_env(suite, 0, seed=7)
    try:
        episode = tmp_path / "ep0"
        result = example.run_episode(env, suite.get_task_init_states(0)[0], prompt, policy, args, episode,
                                     max_steps=220)
    finally:
        env.close()
    assert result.error is None, result.error
    assert result.inference_calls == 1 and result.steps == 10 + 5
    bundle = load_bundle(episode / "bundles" / "inference_000.npz")
    assert bundle.camera_names == ["image", "image2"] and str(bundle.prompt[0]) == prompt
    np.testing.assert_array_equal(bundle.images[0, 0], result.frames[0])


MAIN_VENV = Path(os.environ.get("PI0VIZ_VENV", ROOT / ".venv"))  # where LIBERO and the example run


@only(LEROBOT06)
@pytest.mark.libero
@pytest.mark.slow
def test_libero_episode_through_pi0viz_serve_lerobot(checkpoint, tmp_path):
    """`pi0viz serve --lerobot DIR` in this venv (LeRobot 0.6.1) answers examples/libero/main.py run from .venv."""
    from pi0viz.core.bundle import load_bundle

    client = MAIN_VENV / "bin" / "python"
    check = "import sys; from pi0viz.policy import libero_env; sys.exit(not libero_env.libero_installed())"
    has_libero = client.exists() and subprocess.run([str(client), "-c", check], capture_output=True).returncode == 0
    require_that(has_libero, "libero", f"the LIBERO simulator in {MAIN_VENV}")
    # The CLI itself, with the tiny variant registered (LeRobot knows only the full-size variant names).
    serve = ("import sys; sys.path.insert(0, 'tests'); import torch, torch_support as ts; from pi0viz.cli import main; "
             "torch.set_num_threads(1)\nwith ts.tiny_variant('pi0'): main(sys.argv[1:])")
    server = subprocess.Popen([sys.executable, "-c", serve, "serve", "--lerobot", str(checkpoint), "--port", "0"],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in server.stderr:  # "serving ... on ws://127.0.0.1:PORT ..." once it listens
            lines.append(line)
            if (found := re.search(r"ws://127\.0\.0\.1:(\d+)", line)):
                break
        else:
            pytest.fail("pi0viz serve --lerobot stopped:\n" + "".join(lines))
        out = tmp_path / "viz"
        run = subprocess.run(
            [str(client), "examples/libero/main.py", "--policy", f"ws://127.0.0.1:{found.group(1)}", "--tasks", "0",
             "--num-trials-per-task", "1", "--max-inference-calls", "1", "--bundles-only", "--fuse-heads",
             "--attention-out", str(out), "--video-out-path", str(tmp_path / "videos")],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    bundle = load_bundle(out / "libero_spatial_task0_ep0" / "bundles" / "inference_000.npz")
    assert bundle.camera_names == ["image", "image2"] and bundle.attention_heads == "max"
    assert bundle.attention.shape == (10, 4, 1, 1, 1, 51, 2 * 256 + 48 + 51)
    assert np.asarray(bundle.actions).shape == (1, 50, 7) and np.isfinite(bundle.attention).all()
    assert "pick up the black bowl" in str(bundle.prompt[0])
