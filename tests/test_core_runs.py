"""pi0viz.core.runs, the one reader of runs: every folder kind pi0viz writes, side files told apart by their format
(never by name), calls in inference_step order, and one-line refusals. Real .npz files throughout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bundle_support import small
from click.testing import CliRunner
from episode_support import rollout_frames

from pi0viz.analysis.masks import MASKS_FORMAT, CallMasks, masks_path, save_masks
from pi0viz.cli import main
from pi0viz.core import runs
from pi0viz.core.bundle import FORMAT, save_bundle
from pi0viz.core.runs import CallFile, RunError, bundle_format, read_run
from pi0viz.episode.frames import FRAMES_FORMAT, save_frames
from pi0viz.errors import Pi0vizError
from pi0viz.sweep.plan import RECORD_FORMAT


def _masks() -> CallMasks:
    cov = np.zeros((1, 3, 16, 16), np.float32)
    cov[0, 0, 4:6, 4:6] = 1.0
    return CallMasks(camera_names=["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"], objects=["bowl"],
                     coverage=cov, has_mask=np.array([True, True, False]))


def _call(folder: Path, step: int | None, name: str | None = None, *, masks: bool = True) -> Path:
    """A small bundle saved as folder/name (default inference_NNN.npz), with its masks next to it."""
    b = small(seed=step or 0)
    b.inference_step = step
    path = save_bundle(b, folder / (name or f"inference_{step:03d}.npz"))
    if masks:
        save_masks(_masks(), masks_path(path))
    return path


def _episode(root: Path, steps=(0, 1, 2), *, frames: bool = True) -> Path:
    """An episode folder as the LIBERO example writes it: bundles/ with masks, frames.npz, episode.json."""
    for s in steps:
        _call(root / "bundles", s)
    if frames:
        save_frames(rollout_frames(), root / "frames.npz")
    (root / "episode.json").write_text(json.dumps({"success": True}))
    return root


def test_the_side_file_formats_agree_with_their_writers() -> None:
    assert (runs.CAPTURE_FORMAT, runs.MASKS_FORMAT, runs.FRAMES_FORMAT, runs.RECORD_FORMAT) == (
        FORMAT, MASKS_FORMAT, FRAMES_FORMAT, RECORD_FORMAT)


def test_bundle_format_reads_only_the_format_member(tmp_path: Path) -> None:
    bundle = _call(tmp_path, 3)
    assert bundle_format(bundle) == FORMAT
    assert bundle_format(masks_path(bundle)) == MASKS_FORMAT
    assert bundle_format(save_frames(rollout_frames(), tmp_path / "frames.npz")) == FRAMES_FORMAT
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    assert bundle_format(tmp_path / "plain.npz") is None  # an .npz without a format: not pi0viz's
    np.savez(tmp_path / "long.npz", format=np.asarray("x" * 5000))
    assert bundle_format(tmp_path / "long.npz") is None  # a format member too big to be one is not read
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert bundle_format(tmp_path / "junk.npz") is None


def test_episode_folder_bundles_folder_and_named_files_give_the_same_calls(tmp_path: Path) -> None:
    root = _episode(tmp_path / "ep")
    for given in ([root], [root / "bundles"], sorted((root / "bundles").glob("*.npz")) + [root / "frames.npz"]):
        run = read_run(given)
        ep = run.single_episode("test")
        assert ep.root == root and ep.bundles_dir == root / "bundles", given
        assert [c.inference_step for c in ep.calls] == [0, 1, 2]
        assert ep.bundle_paths == [root / "bundles" / f"inference_{s:03d}.npz" for s in range(3)]
        assert [c.masks for c in ep.calls] == [masks_path(p) for p in ep.bundle_paths]
        assert ep.frames == root / "frames.npz" and ep.info == root / "episode.json"
        assert run.skipped == []


def test_demo_layout_finds_the_tree_next_to_the_bundles(tmp_path: Path) -> None:
    root = tmp_path / "pi0viz_demo"
    _call(root / "bundles", 0)
    (root / "attention_viz" / "inference_timestep_0").mkdir(parents=True)
    ep = read_run(root).single_episode("test")
    assert ep.tree == root / "attention_viz" and ep.frames is None and len(ep.calls) == 1
    assert runs.is_tree(root / "attention_viz") and not runs.is_tree(root)


def test_a_renamed_masks_file_is_still_masks_and_never_a_call(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    _call(folder, 0, masks=False)
    _call(folder, 1, masks=False)
    save_masks(_masks(), folder / "inference_009.npz")  # masks under a bundle's name
    ep = read_run(folder).single_episode("test")
    assert [c.inference_step for c in ep.calls] == [0, 1]
    assert ep.side_files == {folder / "inference_009.npz": MASKS_FORMAT}


def test_an_npz_that_is_not_a_bundle_is_skipped_in_a_folder_but_refused_when_named(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    _call(folder, 0)
    np.savez(folder / "notes.npz", x=np.arange(3))
    (folder / "broken.npz").write_bytes(b"PK garbage")
    (folder / "readme.txt").write_text("hi")  # not an .npz: not even looked at
    run = read_run(folder)
    assert [c.inference_step for c in run.calls] == [0]
    assert sorted(p.name for p, _ in run.skipped) == ["broken.npz", "notes.npz"]
    for name, expect in (("notes.npz", r"not a capture bundle \(no 'format' member\)"),
                         ("broken.npz", "not an .npz archive"), ("readme.txt", "not a capture bundle")):
        with pytest.raises(RunError, match=expect) as err:
            read_run([folder / "inference_000.npz", folder / name])
        assert str(folder / name) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RunError, match="is object masks .pi0viz.masks/1., not a capture bundle"):
        read_run(folder / "inference_000.masks.npz")
    with pytest.raises(RunError, match="no capture bundle at"):
        read_run(tmp_path / "missing.npz")
    assert issubclass(RunError, Pi0vizError)


def test_two_bundles_with_one_inference_step_are_refused_but_side_files_never_cause_it(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    for s in (0, 1):
        _call(folder, s)  # each with masks: four .npz files, two calls
    save_frames(rollout_frames(), folder / "frames.npz")
    assert len(read_run(folder).calls) == 2
    _call(folder, 1, "copy_of_call_1.npz", masks=False)
    with pytest.raises(RunError, match=r"two bundles claim inference_step 1 \(copy_of_call_1.npz, inference_001.npz\)"):
        read_run(folder)


def test_call_order_is_the_inference_step_else_the_file_name(tmp_path: Path) -> None:
    a = tmp_path / "a"
    for name, step in (("z.npz", 0), ("m.npz", 2), ("b.npz", 1)):
        _call(a, step, name, masks=False)
    assert [c.path.name for c in read_run(a).calls] == ["z.npz", "b.npz", "m.npz"]
    b = tmp_path / "b"
    for name in ("call_10.npz", "call_2.npz", "call_1.npz"):
        _call(b, None, name, masks=False)
    calls = read_run(b).calls
    assert [c.path.name for c in calls] == ["call_1.npz", "call_2.npz", "call_10.npz"]  # numbers as numbers
    assert all(isinstance(c, CallFile) and c.inference_step is None for c in calls)


def test_run_folder_holds_one_episode_per_folder_and_single_episode_names_them(tmp_path: Path) -> None:
    run_dir = tmp_path / "attention_out"
    for k in range(3):
        _episode(run_dir / f"libero_spatial_task0_ep{k}", steps=(0, 1), frames=False)
    (run_dir / "libero_spatial_task0_ep0" / "inference_timestep_0" / "diffusion_timestep_0").mkdir(parents=True)
    run = read_run(run_dir)
    assert [ep.root.name for ep in run.episodes] == [f"libero_spatial_task0_ep{k}" for k in range(3)]
    assert run.episodes[0].tree == run_dir / "libero_spatial_task0_ep0" and run.episodes[1].tree is None
    with pytest.raises(RunError, match="holds 3 episodes .*pi0viz video works on one") as err:
        run.single_episode("pi0viz video")
    assert "libero_spatial_task0_ep2" in str(err.value) and "\n" not in str(err.value)
    assert read_run(run_dir / "libero_spatial_task0_ep1").single_episode("x").root.name == "libero_spatial_task0_ep1"


def test_sweep_folder_episodes_come_from_records_and_saved_bundles(tmp_path: Path) -> None:
    from pi0viz.sweep.finish import assemble_record
    from pi0viz.sweep.plan import SweepSettings, plan_episodes
    from pi0viz.sweep.store import RunStore

    store = RunStore(tmp_path / "sweep").open(SweepSettings())
    keys = plan_episodes("libero_spatial", [0, 1], 1, seed=7)
    from pi0viz.sweep.attention import summarize_call

    for key in keys:
        calls = []
        for call in range(2):
            b = small(seed=call)
            b.inference_step = call
            path = tmp_path / "sweep" / "bundles" / key.name / f"inference_{call:03d}.npz"
            calls.append(summarize_call(b, bundle_path=str(path) if key is keys[0] else None, masks=_masks()))
        outcome = {"key": {"suite": key.suite, "task": key.task, "trial": key.trial, "seed": key.seed},
                   "prompt": "p", "success": True, "steps": 10, "calls": 2, "error": None}
        store.write_record(key, assemble_record(outcome, {}, calls, video=None))
    np.savez(store.episodes / "stray.npz", x=np.zeros(2))  # not a record: skipped by the reader and the store
    assert list(store.finished()) == keys
    run = read_run(tmp_path / "sweep")
    assert run.sweeps == [tmp_path / "sweep"] and len(run.episodes) == 2
    saved, bare = run.episodes
    assert saved.record == store.record_path(keys[0]) and len(saved.calls) == 2 and saved.calls[0].masks
    assert bare.record == store.record_path(keys[1]) and bare.calls == [] and bare.name == keys[1].name
    assert run.single_episode("pi0viz view") is saved  # the only episode with calls
    assert [p.name for p, _ in run.skipped] == ["stray.npz"]
    shutil.rmtree(tmp_path / "sweep" / "bundles")
    with pytest.raises(RunError, match="sweep whose episodes saved no capture bundles .*--save-bundles"):
        read_run(tmp_path / "sweep")
    assert [ep.record for ep in read_run(tmp_path / "sweep", allow_empty=True).episodes] == [
        store.record_path(k) for k in keys]


def test_cli_view_video_metrics_refuse_a_masks_file_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    _call(folder, 0)
    (tmp_path / "only_masks").mkdir()
    shutil.copy(masks_path(folder / "inference_000.npz"), tmp_path / "only_masks" / "inference_000.npz")
    for args in (["view", str(masks_path(folder / "inference_000.npz")), "--out", str(tmp_path / "v.html")],
                 ["metrics", str(masks_path(folder / "inference_000.npz"))],
                 ["video", str(tmp_path / "only_masks"), "--out", str(tmp_path / "v.mp4"), "--no-progress"],
                 ["rerun", str(tmp_path / "only_masks"), "--out", str(tmp_path / "v.rrd"), "--no-progress"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"pi0viz {args[0]}: error: ") and result.stderr.count("\n") == 1, result.stderr


# -- decoding bundles (pi0-FAST, pi0viz.capture/2) ----------------------------------------------------------------


def _decode_call(folder: Path, step: int, name: str | None = None) -> Path:
    from pi0viz.core.decode_bundle import save_decode_bundle
    from pi0viz.core.synthetic import synthetic_decode_bundle

    b = synthetic_decode_bundle(num_steps=3, num_layers=1, num_heads=1, patch_grid=(2, 2), image_size=28,
                                num_text_tokens=6, num_valid_text=3, seed=step, inference_step=step)
    return save_decode_bundle(b, folder / (name or f"inference_{step:03d}.npz"))


def test_decoding_bundles_are_calls_of_their_own_kind_in_every_layout(tmp_path: Path) -> None:
    from pi0viz.core.decode_bundle import DecodeBundle

    demo = tmp_path / "pi0viz_demo"  # the `pi0viz demo --model pi0-fast` layout: bundles/ + attention_viz/
    paths = [_decode_call(demo / "bundles", s, f"call_{9 - s}.npz") for s in (2, 0, 1)]  # names against the order
    (demo / "attention_viz" / "inference_timestep_0").mkdir(parents=True)
    for given in ([demo], [demo / "bundles"], [paths[0], paths[1], paths[2]]):
        run = read_run(given)
        ep = run.single_episode("test")
        assert [c.inference_step for c in ep.calls] == [0, 1, 2]
        assert [c.path.name for c in ep.calls] == ["call_9.npz", "call_8.npz", "call_7.npz"]
        assert {c.kind for c in ep.calls} == {runs.DECODING} and run.kind == ep.kind == runs.DECODING
        assert {c.format for c in ep.calls} == {"pi0viz.capture/2"}
        assert run.skipped == []
    assert read_run(demo).single_episode("test").tree == demo / "attention_viz"
    bundle = runs.load_call(read_run(demo).calls[1])
    assert isinstance(bundle, DecodeBundle) and bundle.inference_step == 1
    assert isinstance(runs.load_call(paths[0]), DecodeBundle)
    # a pi0 run says it is denoising, and loads as a CaptureBundle
    _call(tmp_path / "pi0", 0)
    pi0 = read_run(tmp_path / "pi0")
    assert pi0.kind == runs.DENOISING and pi0.calls[0].kind == runs.DENOISING
    assert type(runs.load_call(pi0.calls[0])).__name__ == "CaptureBundle"


def test_a_run_mixing_denoising_and_decoding_calls_is_refused_in_one_line(tmp_path: Path) -> None:
    den = _call(tmp_path / "ep", 0)
    dec = _decode_call(tmp_path / "ep", 1)
    for given in (tmp_path / "ep", [den, dec]):
        with pytest.raises(RunError, match="mixes denoising .* and decoding") as err:
            read_run(given)
        text = str(err.value)
        assert "\n" not in text and den.name in text and dec.name in text
    # two episodes of different kinds under one run folder: refused too (one output never mixes the models)
    (tmp_path / "ep").joinpath(dec.name).unlink()
    _decode_call(tmp_path / "ep2", 0)
    with pytest.raises(RunError, match="mixes"):
        read_run(tmp_path)


def test_require_kind_refuses_the_other_kind_in_one_line(tmp_path: Path) -> None:
    _decode_call(tmp_path / "bundles", 0)
    run = read_run(tmp_path)
    runs.require_kind(run, runs.DECODING, "pi0viz x")  # the right kind: nothing
    with pytest.raises(RunError, match="pi0viz knockout reads denoising .* holds decoding") as err:
        runs.require_kind(run.single_episode("t"), runs.DENOISING, "pi0viz knockout")
    assert "\n" not in str(err.value)


def test_a_recorded_serve_folder_of_decoding_calls_is_one_episode(tmp_path: Path) -> None:
    """`pi0viz serve --record DIR` with a pi0-FAST policy: bundles/call_NNNNN.npz (no inference_step: arrival
    order) and the decode trees under attention_viz/, read as one episode of decoding calls; view reads it."""
    from pi0viz.core.decode_bundle import DecodeBundle
    from pi0viz.core.synthetic import synthetic_decode_bundle
    from pi0viz.serving.recorder import CallRecorder

    recorder = CallRecorder(tmp_path / "rec", tree=True)
    for i in range(3):
        recorder.record(synthetic_decode_bundle(num_steps=2, num_layers=1, num_heads=1, patch_grid=(2, 2),
                                                image_size=28, num_text_tokens=4, num_valid_text=2, seed=i), i)
    ep = read_run(tmp_path / "rec").single_episode("test")
    assert ep.kind == runs.DECODING and [c.path.name for c in ep.calls] == [f"call_{i:05d}.npz" for i in range(3)]
    assert ep.tree == tmp_path / "rec" / "attention_viz"
    assert all(isinstance(runs.load_call(c), DecodeBundle) for c in ep.calls)
    result = CliRunner().invoke(main, ["view", str(tmp_path / "rec"), "--out", str(tmp_path / "v.html")])
    assert result.exit_code == 0 and "for 3 call(s) + tree" in result.output, result.output


def test_load_call_checks_a_decoding_bundles_headers_against_its_layout(tmp_path: Path) -> None:
    """Both kinds go through one npz reader (core.bundle.read_arrays): array shapes that do not fit the layout the
    small members describe are refused in one line naming the file, before the large arrays are read."""
    from pi0viz.core.bundle import save_arrays

    good = _decode_call(tmp_path, 0)
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    bad = dict(arrays, key_source=arrays["key_source"][:, :-1])  # one prefix slot short
    path = save_arrays(bad, tmp_path / "bad.npz")
    with pytest.raises(Pi0vizError, match=r"bad\.npz: key_source must have shape \[1, 18\]") as err:
        runs.load_call(path)
    assert "\n" not in str(err.value)
    wide = dict(arrays, attention=np.zeros(arrays["attention"].shape[:-1] + (40,), np.float16))
    with pytest.raises(Pi0vizError, match="S = 40 kv-cache slots"):
        runs.load_call(save_arrays(wide, tmp_path / "wide.npz"))


# -- the causal side files: prefix attention, observations, knockout results (issue 23) -------------------------


def _prefix(step: int):
    from pi0viz.core.prefix_bundle import PrefixAttention

    L, C, N, T = 1, 3, 4, 5
    return PrefixAttention(camera_names=["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"],
                           images=np.zeros((C, 8, 8, 3), np.uint8), image_masks=np.array([True, True, False]),
                           token_pieces=np.array(["a"] * T), token_mask=np.ones(T, bool), patch_grid=(2, 2),
                           layer_indices=np.arange(L, dtype=np.int32),
                           image_to_prompt=np.zeros((L, C * N, T), np.float16),
                           image_to_image=np.zeros((L, C * N, C * N), np.float16),
                           prompt_to_image=np.zeros((L, T, C * N), np.float16), inference_step=step)


def test_prefix_and_observation_side_files_belong_to_their_call_and_are_never_calls(tmp_path: Path) -> None:
    from pi0viz.causal.observation import OBSERVATION_FORMAT as CAUSAL_OBSERVATION
    from pi0viz.causal.observation import load_observation
    from pi0viz.core.observation_file import observation_path, save_observation
    from pi0viz.core.prefix_bundle import PREFIX_FORMAT, prefix_path, save_prefix

    assert runs.PREFIX_FORMAT == PREFIX_FORMAT and runs.OBSERVATION_FORMAT == CAUSAL_OBSERVATION
    root = _episode(tmp_path / "ep", steps=(0, 1))
    calls = [root / "bundles" / f"inference_{s:03d}.npz" for s in (0, 1)]
    save_prefix(_prefix(0), prefix_path(calls[0]))
    request = {"observation/state": np.arange(8.0), "prompt": "put the bowl"}
    save_observation(request, observation_path(calls[0]))
    save_observation(request, observation_path(calls[1]))
    assert load_observation(observation_path(calls[1]))["prompt"] == "put the bowl"
    for given in ([root], [root / "bundles"], calls):
        run = read_run(given)
        ep = run.single_episode("test")
        assert ep.bundle_paths == calls, given  # 7 .npz files, two calls
        assert [c.prefix for c in ep.calls] == [prefix_path(calls[0]), None]
        assert [c.observation for c in ep.calls] == [observation_path(c) for c in calls]
        assert [c.masks for c in ep.calls] == [masks_path(c) for c in calls]
        assert run.skipped == [] and ep.side_files == {}
    # a prefix file under another name is still a prefix file: a side file, never a call
    save_prefix(_prefix(5), root / "bundles" / "inference_005.npz")
    ep = read_run(root).single_episode("test")
    assert len(ep.calls) == 2 and ep.side_files == {root / "bundles" / "inference_005.npz": PREFIX_FORMAT}
    # named alone: one line saying what it is
    for side, what in ((prefix_path(calls[0]), "the prefix's own attention"),
                       (observation_path(calls[1]), "a call's policy request")):
        with pytest.raises(RunError, match=f"is {what} .*not a capture bundle") as err:
            read_run(side)
        assert "\n" not in str(err.value)


def test_knockout_results_are_found_in_the_episode_folder(tmp_path: Path) -> None:
    from pi0viz.analysis.report import KNOCKOUT_FORMAT, STUDY_FORMAT
    from pi0viz.causal.study import STUDY_FORMAT as WRITTEN

    assert runs.KNOCKOUT_FILES == {"knockouts.json": STUDY_FORMAT, "knockout.json": KNOCKOUT_FORMAT}
    assert STUDY_FORMAT == WRITTEN
    root = _episode(tmp_path / "ep", steps=(0,))
    for rel in ("knockouts/knockouts.json", "curves/knockout.json", "knockouts.json", "a/b/knockouts.json",
                "a/b/c/knockouts.json", "bundles/knockouts.json", "attention_viz/knockouts.json", ".hidden/knockout.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}")
    (root / "knockouts" / "prefix.npz").write_bytes(b"")  # OUT/prefix.npz of `pi0viz knockout --prefix-attention`
    want = sorted(root / r for r in ("a/b/knockouts.json", "curves/knockout.json", "knockouts.json",
                                     "knockouts/knockouts.json"))  # 2 levels deep; not in bundles/, trees, hidden folders
    assert runs.find_knockouts(root) == want
    for given in (root, root / "bundles", root / "bundles" / "inference_000.npz"):
        assert read_run(given).single_episode("test").knockouts == want
    assert len(read_run(root).calls) == 1  # knockouts/ holds no calls
