"""The reach task's action unit is what LIBERO's controller does: a short held-action run in the real simulator
(physics only) measures the gripper's travel per control step per action unit, and the task's ACTION_UNIT_M, its
closed-loop chunks and the settled scenes use it."""

from __future__ import annotations

import numpy as np
import pytest
from extras import require_libero

pytestmark = [pytest.mark.libero, pytest.mark.slow]
require_libero()


@pytest.fixture(scope="module")
def calibration():
    from pi0viz.training.calibrate import calibrate

    return calibrate(axes=(0, 1, 2), amplitudes=(1.0,), steps=12, settle=5, ramp=3)


def test_the_measured_unit_is_the_one_the_task_uses(calibration) -> None:
    from pi0viz.policy.reach_task import ACTION_UNIT_M, SHIPPED_ACTION_UNIT_M

    unit = calibration["position_unit_m"]
    assert abs(unit - ACTION_UNIT_M) < 0.05 * ACTION_UNIT_M, (unit, ACTION_UNIT_M)
    for axis in ("x", "y", "z"):  # each axis within 12 % of the one unit
        assert abs(calibration["per_axis_rate_per_unit"][axis] - ACTION_UNIT_M) < 0.12 * ACTION_UNIT_M
    assert unit < 0.4 * SHIPPED_ACTION_UNIT_M  # the controller's output_max (5 cm) is not the travel per step
    for run in calibration["runs"]:  # a held action moves along its own axis, in its own direction
        assert np.sign(run["amplitude"]) * np.mean(run["per_step"][3:]) > 0 and run["off_axis_m"] < 0.002


def test_approach_chunks_in_the_measured_unit_stay_inside_the_controller_limits() -> None:
    from pi0viz.policy.reach_task import ACTION_UNIT_M, HOVER_M, approach_chunk, chunk_endpoint

    eef, obj = np.array([-0.15, 0.0, 0.30]), np.array([0.10, -0.25, 0.03])
    far = approach_chunk(eef, obj)
    assert far.shape == (10, 7) and np.abs(far[:, :3]).max() <= 1.0 + 1e-6 and (far[:, 6] == -1).all()
    assert np.isclose(np.abs(far[0, :3]).max(), 1.0)  # far away: full speed toward the target
    end = chunk_endpoint(eef, far, ACTION_UNIT_M)
    goal = obj + [0, 0, HOVER_M]
    assert np.linalg.norm(goal - end) < np.linalg.norm(goal - eef) - 0.1  # 10 steps cover > 10 cm of 45
    near = approach_chunk(goal + [0.01, 0.0, 0.0], obj)  # 1 cm off: it slows down and stays
    assert np.linalg.norm(chunk_endpoint(goal + [0.01, 0, 0], near, ACTION_UNIT_M) - goal) < 0.001


@pytest.fixture(scope="module")
def loop():
    """Two scripted closed-loop reaches of libero_object task 0 (8 frames each), the first without detours."""
    from pi0viz.policy.reach_task import DISTINCT_KINDS
    from pi0viz.training.reach_scenes import SceneMaker

    maker = SceneMaker(0)
    try:
        tops = dict(zip(maker.objects.labels, maker.objects.tops()))  # LIBERO's init state: every object upright
        straight = maker.trajectory(np.random.default_rng(5), kinds=DISTINCT_KINDS, calls=8, detour=0.0)
        assert maker.env.env.timestep == 0  # robosuite's counters reset for the next scene
        other = maker.trajectory(np.random.default_rng(6), kinds=DISTINCT_KINDS, calls=8)
        return maker.names, straight, other, tops
    finally:
        maker.close()


def test_a_scripted_closed_loop_reach_arrives_on_a_settled_scene(loop) -> None:
    """SceneMaker.trajectory in the simulator: a settled layout (objects at rest, counters reset), then the
    scripted approach in the measured unit brings the gripper to the hover point within 8 calls of 5 steps."""
    from pi0viz.policy.reach_layout import object_label
    from pi0viz.policy.reach_task import SUCCESS_RADIUS_M, hover_point

    names, frames, _, _ = loop
    k = int(frames[0]["target"])
    label = object_label(names[k])
    dist = [np.linalg.norm(f["state"][:3] - hover_point(f["positions"][k], label)) for f in frames]
    assert dist[0] > 0.1 and min(dist) < SUCCESS_RADIUS_M / 2, dist
    moved = np.linalg.norm(frames[-1]["positions"][k, :2] - frames[0]["positions"][k, :2])
    assert moved < 0.02  # it hovers over the target instead of pushing it
    # settled: the objects do not move between the first two frames while the arm is far from them
    still = np.linalg.norm(frames[1]["positions"][:, :2] - frames[0]["positions"][:, :2], axis=-1)
    assert still[frames[0]["present"]].max() < 0.005
    assert frames[0]["coverage"][k, 0].sum() > 0.2 and len({int(f["call"]) for f in frames}) == 8


def test_the_task_table_of_object_tops_is_what_the_simulator_has(loop) -> None:
    """reach_task.OBJECT_TOP_M (the hover heights' source) against the geoms of task 0's seven kinds, upright."""
    from pi0viz.policy.reach_task import OBJECT_TOP_M

    tops = loop[3]
    assert len(tops) == 7 and tops["basket"] > 0.14
    for label, top in tops.items():
        assert abs(top - OBJECT_TOP_M[label]) < 0.003, (label, top, OBJECT_TOP_M[label])


def test_training_on_closed_loop_frames_writes_an_approach_checkpoint(loop, tmp_path) -> None:
    """train_reach --chunk approach on frames along the way: the loss falls, the checkpoint records its task and
    unit, and loads as a policy whose chunks are read in that unit."""
    from pi0viz.policy.reach_model import load_reach_policy, reach_task_of
    from pi0viz.policy.reach_task import ACTION_UNIT_M, ReachScenes
    from pi0viz.training.reach_scenes import write_scene_file
    from pi0viz.training.train_reach import train

    names, straight, other, _ = loop
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_scene_file(folder / "task_0_seed_0_loop_distinct.npz", straight + other[:4], names, task_id=0, seed=0)
    held = write_scene_file(folder / "task_0_seed_1_loop_distinct.npz", other[4:], names, task_id=0, seed=1)
    scenes = ReachScenes.load([folder / "task_0_seed_0_loop_distinct.npz"])
    states = scenes.state[scenes.examples[:, 0], :3]
    assert np.ptp(states, axis=0).max() > 0.1  # examples from arm poses along the way, not only home
    result = train(folder, tmp_path / "ckpt", steps=40, batch=4, lr=1e-3, seed=0, solo_until=0.0, eval_every=40,
                   eval_examples=4, easy_glob="", train_glob="task_*_seed_0_loop_distinct.npz",
                   held_glob="task_*_seed_1_loop_distinct.npz", chunk="approach")
    losses = result["losses"]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), (losses[:10], losses[-10:])
    assert np.isfinite(result["log"][-1]["target_chunk_cm"])
    assert reach_task_of(tmp_path / "ckpt") == {"chunk": "approach", "action_unit_m": ACTION_UNIT_M}
    out = load_reach_policy(tmp_path / "ckpt").infer(ReachScenes.load([held]).observation(0, 0))
    assert out["actions"].shape == (10, 7) and np.isfinite(out["actions"]).all()
