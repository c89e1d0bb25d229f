"""A real LIBERO episode with --grounding: simulator masks of the task's objects, metrics, and the report.

One env (libero_spatial task 0), the tiny pi0 in process, 2 inference calls, bundles only (no JPEG tree).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from extras import require_libero
from libero_support import load_libero_example


pytestmark = [pytest.mark.libero, pytest.mark.slow]
require_libero()


@pytest.fixture(scope="module")
def episode(scene, tmp_path_factory):
    from pi0viz.policy.jax_policy import Policy

    example = load_libero_example()
    env, prompt, init_state = scene
    run = tmp_path_factory.mktemp("run")
    args = example.Args(policy="tiny", max_inference_calls=2, bundles_only=True, grounding=True, fuse_heads=True)
    result = example.run_episode(env, init_state, prompt, example.InProcessPolicy(Policy.tiny(seed=0)), args,
                                 run / "ep0", max_steps=220, info={"suite": "libero_spatial", "task_id": 0, "trial": 0})
    assert result.error is None, result.error
    return run, result, prompt


def test_instance_maps_line_up_with_the_camera_frames(scene) -> None:
    """Object boundaries of the instance map sit on edges of the RGB frame of the same observation (a map from
    another state, mirrored or flipped would put them on flat table and wall)."""
    from pi0viz.analysis.masks import LiberoSegmenter

    env, _, init_state = scene
    env.reset()
    env.set_init_state(init_state)
    LiberoSegmenter(env)
    for _ in range(3):
        obs, _, _, _ = env.step([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    for camera in ("agentview", "robot0_eye_in_hand"):
        gray = obs[f"{camera}_image"].astype(np.float32).mean(axis=-1)
        edge = np.zeros_like(gray)
        edge[:, :-1] += np.abs(np.diff(gray, axis=1))
        edge[:-1] += np.abs(np.diff(gray, axis=0))
        inst = obs[camera + LiberoSegmenter.SUFFIX]
        assert inst.shape == gray.shape and inst.max() >= 0

        def boundary_edge(m: np.ndarray, edge: np.ndarray = edge) -> float:
            b = np.zeros(m.shape, bool)
            b[:, :-1] |= m[:, 1:] != m[:, :-1]
            b[:-1] |= m[1:] != m[:-1]
            return float(edge[b].mean() / edge.mean())

        assert boundary_edge(inst) > 2.5, camera  # boundaries on strong image edges
        assert boundary_edge(inst[::-1]) < 0.6 * boundary_edge(inst), camera  # a flipped map would not be


def test_masks_of_the_task_objects_are_saved_for_every_call(episode) -> None:
    from pi0viz.analysis.masks import load_masks

    run, result, _ = episode
    assert result.rendered_calls == [0, 1]
    for call in (0, 1):
        masks = load_masks(run / "ep0" / "bundles" / f"inference_{call:03d}.masks.npz")
        assert masks.objects == ["akita_black_bowl_1", "plate_1"]  # the task's obj_of_interest
        assert masks.has_mask.tolist() == [True, True, False]  # agent view, wrist, padded right wrist
        area = masks.coverage.sum(axis=(2, 3))  # [objects, cameras] in patches
        assert (area[:, 0] > 1).all() and (area[:, 0] < 40).all()  # both objects visible in the agent view
        assert area[:, 2].max() == 0


def test_metrics_and_episode_record(episode) -> None:
    run, _, prompt = episode
    bundles = run / "ep0" / "bundles"
    ep = json.loads((bundles / "episode_metrics.json").read_text())
    assert ep["episode"]["prompt"] == prompt and ep["episode"]["success"] is False and ep["episode"]["task_id"] == 0
    assert [c["call"] for c in ep["calls"]] == [0, 1]
    base = ep["calls"][0]["grounding"]["cameras"]["base_0_rgb"]
    assert 0 < base["area_share"] < 0.2 and len(base["by_layer"]["iou10"]) == 4  # tiny pi0: 4 layers
    with open(bundles / "inference_001.grounding.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 * 4 * 50  # steps x layers x action tokens of the tiny pi0
    values = np.array([float(r["base_0_rgb.iou10"]) for r in rows])
    assert ((values >= 0) & (values <= 1)).all()
    assert {r["call"] for r in rows} == {"1"}


def test_report_over_the_run(episode) -> None:
    from pi0viz.analysis.report import write_report

    run, _, prompt = episode
    page = write_report(run)
    text = page.read_text()
    assert prompt in text and "failure" in text and text.count("data:image/png;base64,") >= 4
    summary = json.loads((run / "run_metrics.json").read_text())
    assert summary["tasks"]["libero_spatial task 0"]["episodes"] == 1
