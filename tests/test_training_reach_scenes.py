"""The reach task's scene generator on the real LIBERO simulator: random layouts of a libero_object task, what
the policy sees, and object masks that sit where the objects are."""

from __future__ import annotations

import numpy as np
import pytest
from extras import require_libero


pytestmark = [pytest.mark.libero, pytest.mark.slow]
require_libero()


@pytest.fixture(scope="module")
def scenes():
    from pi0viz.training.reach_scenes import SceneMaker

    maker = SceneMaker(0)
    try:
        rng = np.random.default_rng(0)
        full = [maker.scene(rng) for _ in range(2)]
        solo = maker.scene(rng, solo=True)
        from pi0viz.policy.reach_task import DISTINCT_KINDS

        distinct = maker.scene(rng, kinds=DISTINCT_KINDS)
        return maker.names, full, solo, distinct
    finally:
        maker.close()


def test_layouts_are_random_and_objects_apart(scenes) -> None:
    from pi0viz.training.reach_scenes import MIN_GAP, X_RANGE, Y_RANGE

    names, full, _, _ = scenes
    a, b = (s["positions"][:, :2] for s in full)
    assert not np.allclose(a, b, atol=0.01)
    for xy in (a, b):
        assert (xy[:, 0] >= X_RANGE[0]).all() and (xy[:, 0] <= X_RANGE[1]).all()
        assert (xy[:, 1] >= Y_RANGE[0]).all() and (xy[:, 1] <= Y_RANGE[1]).all()
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(names))
        assert d.min() >= MIN_GAP - 1e-9
    assert full[0]["image"].shape == (224, 224, 3) and full[0]["image"].dtype == np.uint8
    assert full[0]["state"].shape == (8,)


def test_masks_sit_where_the_objects_are(scenes) -> None:
    """In the agentview (rotated 180 degrees as the policy sees it) the world's y axis runs across the image: the
    column of each object's mask centre orders the objects as their y positions do."""
    _, full, _, _ = scenes
    for s in full:
        cov = s["coverage"][:, 0]  # [K, 16, 16] agentview
        seen = cov.sum(axis=(1, 2)) > 0.2
        assert seen.sum() >= len(cov) - 2  # at most a couple hidden behind others
        cols = np.array([(c.sum(axis=0) * np.arange(16)).sum() / c.sum() for c in cov[seen]])
        y = s["positions"][seen, 1]
        rank = np.corrcoef(np.argsort(np.argsort(cols)), np.argsort(np.argsort(y)))[0, 1]
        assert abs(rank) > 0.8, (cols, y)


def test_a_solo_scene_shows_one_object(scenes) -> None:
    _, _, solo, _ = scenes
    assert solo["present"].sum() == 1
    k = int(np.flatnonzero(solo["present"])[0])
    agent = solo["coverage"][:, 0].sum(axis=(1, 2))
    assert agent[k] > 0.2 and np.delete(agent, k).max() == 0


def test_a_distinct_scene_shows_only_the_distinct_kinds(scenes) -> None:
    """--distinct scenes (the shipped model's): every object of DISTINCT_KINDS stays in view, the others are
    present = False and cover nothing in either camera."""
    from pi0viz.policy.reach_task import DISTINCT_KINDS
    from pi0viz.training.reach_scenes import object_label

    names, _, _, distinct = scenes
    kinds = np.array([object_label(n) in DISTINCT_KINDS for n in names])
    assert 2 <= kinds.sum() < len(names)  # task 0: basket, alphabet soup, salad dressing, milk
    np.testing.assert_array_equal(distinct["present"], kinds)
    area = distinct["coverage"].sum(axis=(2, 3))  # [K, 2 cameras]
    assert (area[~kinds] == 0).all() and (area[kinds, 0] > 0.2).sum() >= kinds.sum() - 1


def test_training_on_simulator_scenes_lowers_the_loss_and_writes_a_loadable_checkpoint(scenes, tmp_path) -> None:
    """The training loop (optax AdamW on openpi's flow-matching loss) on scene files written from these simulator
    scenes, briefly: the loss falls, the evaluation runs, and the checkpoint loads as a reach-tiny policy."""
    from pi0viz.policy.reach_model import load_reach_policy
    from pi0viz.policy.reach_task import ReachScenes
    from pi0viz.training.reach_scenes import write_scene_file
    from pi0viz.training.train_reach import train

    names, full, solo, _ = scenes
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_scene_file(folder / "task_0_seed_0_distinct.npz", full, names, task_id=0, seed=0)
    write_scene_file(folder / "task_0_seed_0_solo.npz", [solo], names, task_id=0, seed=0)
    held = write_scene_file(folder / "task_0_seed_1_distinct.npz", full[:1], names, task_id=0, seed=1)
    result = train(folder, tmp_path / "ckpt", steps=60, batch=4, lr=1e-3, seed=0, solo_until=0.2, eval_every=60,
                   eval_examples=4)
    losses = result["losses"]
    assert np.mean(losses[-15:]) < 0.7 * np.mean(losses[:15]), (losses[:15], losses[-15:])
    assert result["log"][-1]["step"] == 60 and np.isfinite(result["log"][-1]["error_cm"])
    policy = load_reach_policy(tmp_path / "ckpt")
    out = policy.infer(ReachScenes.load([held]).observation(0, 0))
    assert out["actions"].shape == (10, 7) and np.isfinite(out["actions"]).all()
