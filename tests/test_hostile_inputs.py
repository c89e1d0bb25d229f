"""Hostile inputs, issue 20: "one line, exit 1, before work starts", no pickle advice, and CSV injection.

Classes covered here (each case asserts the one line a user gets, the exit status for commands, and that nothing
was written or left behind):
  1. every .npz pi0viz reads (bundles, masks, frames, sweep records, shipped scenes, side members) goes through the
     guarded reader: absurd or forged headers are refused before allocation, object arrays refused, broken files
     are one line;
  2. numpy's advice to unpickle (allow_pickle, "Object arrays cannot be loaded") never reaches the user;
  3. `pi0viz report` leaves out an unusable episode (empty, damaged, wrong types, NaN, huge numbers) with one line
     and still writes the rest;
  4. `pi0viz video` checks --fps and the output suffix; symbolic link loops are one line in every command that
     reads runs; frame cameras that are not the bundles' are an error;
  5. the Python API raises pi0viz's own errors naming the argument (image masks, images, summary and viewer
     options), with numpy warnings turned into errors so none can reach the user;
  6. CSV and Markdown cells that come from data cannot start a formula or break the table.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import signal
import sys
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pi0viz.cli import main
from pi0viz.core.bundle import CaptureBundle, load_bundle, save_bundle
from pi0viz.errors import Pi0vizError

sys.path.insert(0, str(Path(__file__).parent))
from bundle_support import small  # noqa: E402
from episode_support import write_episode  # noqa: E402

PICKLE_ADVICE = ("allow_pickle", "object arrays cannot be loaded", "pickle=true")


# -- helpers --------------------------------------------------------------------------------------------------


def run_cli(*args: object) -> tuple[int, str, str]:
    """Run `pi0viz ARGS` in-process: (exit code, stdout, stderr); an uncaught exception fails the test."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert isinstance(result.exception, (SystemExit, type(None))), f"uncaught {result.exception!r}"
    return result.exit_code, result.stdout, result.stderr


def one_line_error(*args: object) -> str:
    """`pi0viz ARGS` exits 1 with exactly one error line on stderr and no traceback; returns that line."""
    code, out, err = run_cli(*args)
    assert code == 1, f"exit {code}: {out!r} {err!r}"
    assert "Traceback" not in err + out, err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    assert_no_pickle_advice(lines[0])
    return lines[0]


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert "Traceback" not in message
    assert_no_pickle_advice(message)


def assert_no_pickle_advice(message: str) -> None:
    low = message.lower()
    assert not any(advice in low for advice in PICKLE_ADVICE), message


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def assert_no_temporaries(root: Path) -> None:
    leftovers = [p for p in files_under(root) if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not leftovers, leftovers


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every file under root with its bytes: compare before and after to show nothing was written or lost."""
    return {p: p.read_bytes() for p in files_under(root)}


class guard:
    """Turn a hang (a link loop followed for ever) into a failure."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        def alarm(signum, frame):
            raise AssertionError(f"still running after {self.seconds} s")
        self.old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(self.seconds)

    def __exit__(self, *exc: object) -> None:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def npy(shape, dtype="<f4", data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + data


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def object_array_npz() -> bytes:
    """A real object array, pickled as numpy writes it when allowed (the thing pi0viz must never unpickle)."""
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return zip_of({"format.npy": npy((), "<U1", "x".encode("utf-32-le")), "evil.npy": buf.getvalue()})


def forged_sizes_npz() -> bytes:
    """A stored member whose central directory and local header claim ~4 GB (file and compressed size)."""
    data = bytearray(zip_of({"x.npy": npy((1,), "<f4", b"\0" * 4)}))
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 20:cd + 28] = (0xFFFFFFF0).to_bytes(4, "little") * 2  # compressed size, file size
    data[18:26] = (0xFFFFFFF0).to_bytes(4, "little") * 2
    return bytes(data)


def corrupt_deflate_npz() -> bytes:
    raw = npy((4096,), "<f4", np.random.default_rng(0).random(4096, np.float32).tobytes())
    data = bytearray(zip_of({"x.npy": raw}, zipfile.ZIP_DEFLATED))
    for i in range(200, 600):  # inside the deflate stream, past the local header
        data[i] ^= 0x5A
    return bytes(data)


def valid_npz() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.arange(20000, dtype=np.float32))
    return buf.getvalue()


HOSTILE_NPZ = {
    "empty": lambda: b"",
    "not_a_zip": lambda: b"this is not an npz archive at all",
    "truncated": lambda: valid_npz()[: len(valid_npz()) // 2],
    "terabyte_header": lambda: zip_of({"x.npy": npy((10**6, 10**6), "<f8")}),
    "exabyte_deflated": lambda: zip_of({"x.npy": npy((10**9, 10**9, 10**3), "<f4")}, zipfile.ZIP_DEFLATED),
    "forged_sizes": forged_sizes_npz,
    "object_array": object_array_npz,
    "structured_dtype": lambda: zip_of({"x.npy": npy((1,), [("a", "<f4")], b"\0" * 4)}),
    "not_npy_member": lambda: zip_of({"notes.txt": b"hello"}),
    "garbage_npy_header": lambda: zip_of({"x.npy": b"\x93NUMPY\x01\x00\x10\x00{not a dict}     \n"}),
    "corrupt_deflate": corrupt_deflate_npz,
}


def _read_bundle(path: Path) -> None:
    load_bundle(path)


def _read_masks(path: Path) -> None:
    from pi0viz.analysis.masks import load_masks

    load_masks(path)


def _read_frames(path: Path) -> None:
    from pi0viz.episode.frames import load_frames

    load_frames(path)


def _store_and_key(path: Path):
    from pi0viz.sweep.plan import EpisodeKey
    from pi0viz.sweep.store import RunStore

    store, key = RunStore(path.parent.parent), EpisodeKey("libero_spatial", 0, 0, 7)
    return store, key


def _read_record(path: Path) -> None:
    store, key = _store_and_key(path)
    store.load_record(key)


def _read_record_meta(path: Path) -> None:
    store, key = _store_and_key(path)
    store.meta(key)


def _read_members(path: Path) -> None:
    from pi0viz.core.runs import load_members

    load_members(path, ["x", "format", "meta"])


def _read_scenes(path: Path) -> None:
    from pi0viz.policy.reach_task import ReachScenes

    ReachScenes.load([path])


def _read_all(path: Path) -> None:
    from pi0viz.core.npzfile import load_npz

    load_npz(path)


READERS = {"bundle": _read_bundle, "masks": _read_masks, "frames": _read_frames, "record": _read_record,
           "record_meta": _read_record_meta, "members": _read_members, "reach_scenes": _read_scenes,
           "load_npz": _read_all}


def hostile_file(tmp_path: Path, kind: str, reader: str) -> Path:
    """The hostile .npz where `reader` looks for it."""
    if reader in ("record", "record_meta"):
        path = tmp_path / "sweep" / "episodes" / "libero_spatial_task00_trial000_seed7.npz"
        from pi0viz.sweep.plan import EpisodeKey
        from pi0viz.sweep.store import RunStore

        path = RunStore(tmp_path / "sweep").record_path(EpisodeKey("libero_spatial", 0, 0, 7))
    else:
        path = tmp_path / ("call.masks.npz" if reader == "masks" else "frames.npz" if reader == "frames" else "x.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(HOSTILE_NPZ[kind]())
    return path


# == 1 and 2. every .npz reader: guarded, one line, nothing unpickled, no pickle advice =======================


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("kind", sorted(HOSTILE_NPZ))
def test_every_npz_reader_refuses_hostile_files_in_one_line(tmp_path, kind, reader):
    path = hostile_file(tmp_path, kind, reader)
    before = snapshot(tmp_path)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(Pi0vizError) as info:
                READERS[reader](path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_one_line(str(info.value))
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated for a {path.stat().st_size}-byte file"
    assert snapshot(tmp_path) == before  # nothing written, nothing removed


def test_no_direct_np_load_in_the_package():
    """The guarded reader is the only way in: no module calls np.load on a file (docstrings may name it)."""
    root = Path(__file__).resolve().parents[1] / "src" / "pi0viz"
    offenders = []
    for path in root.rglob("*.py"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if ("np.load(" in code or "numpy.load(" in code) and "`np.load" not in code:
                offenders.append(f"{path.relative_to(root)}:{n}")
    assert not offenders, offenders


@pytest.fixture(scope="module")
def masked_bundles(tmp_path_factory) -> Path:
    """A folder with one bundle; tests add a (hostile) masks file next to it."""
    folder = tmp_path_factory.mktemp("masked")
    save_bundle(small(), folder / "call.npz")
    return folder


@pytest.mark.parametrize("kind", ["terabyte_header", "object_array", "truncated", "empty", "forged_sizes"])
def test_metrics_with_a_hostile_masks_file_is_one_line(masked_bundles, tmp_path, kind):
    folder = tmp_path / "bundles"
    folder.mkdir()
    (folder / "call.npz").write_bytes((masked_bundles / "call.npz").read_bytes())
    (folder / "call.masks.npz").write_bytes(HOSTILE_NPZ[kind]())
    before = snapshot(tmp_path)
    line = one_line_error("metrics", folder / "call.npz")
    assert "call.masks.npz" in line
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def episode_dir(tmp_path_factory) -> Path:
    return write_episode(tmp_path_factory.mktemp("episode"))


def copy_episode(src: Path, dst: Path) -> Path:
    for p in files_under(src):
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("kind", ["terabyte_header", "object_array", "not_a_zip", "corrupt_deflate"])
def test_video_with_a_hostile_frames_file_is_one_line(episode_dir, tmp_path, kind):
    ep = copy_episode(episode_dir, tmp_path / "ep")
    (ep / "frames.npz").write_bytes(HOSTILE_NPZ[kind]())
    before = snapshot(tmp_path)
    line = one_line_error("video", ep, "--out", tmp_path / "out.mp4", "--no-progress")
    assert "frames.npz" in line
    assert snapshot(tmp_path) == before


# == 3. report: unusable episodes are named and left out, the rest is reported ===============================


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A run folder with one good episode (its episode_metrics.json written by `pi0viz metrics`)."""
    run = tmp_path_factory.mktemp("run")
    for n in range(2):
        b = small(seed=n)
        b.inference_step = n
        save_bundle(b, run / "ep_good" / "bundles" / f"inference_{n:03d}.npz")
    code, out, err = run_cli("metrics", run / "ep_good")
    assert code == 0, out + err
    return run


def good_metrics(run: Path) -> dict:
    return json.loads((run / "ep_good" / "bundles" / "episode_metrics.json").read_text())


def _set_mass(value):
    def mutate(m):
        m["calls"][0]["regions"]["mass"][0][0][0] = value
        return m
    return mutate


def _set(path: tuple, value):
    def mutate(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return m
    return mutate


BAD_METRICS = {
    "first_call_failed": lambda m: '{"calls": []}',
    "not_json": lambda m: "this is not json {",
    "empty_file": lambda m: "",
    "a_list": lambda m: "[1, 2, 3]",
    "a_number": lambda m: "42",
    "calls_not_a_list": lambda m: json.dumps({"calls": {"0": {}}}),
    "nan_mass": lambda m: json.dumps(_set_mass(float("nan"))(m)),  # json.dumps writes NaN
    "infinity_mass": lambda m: json.dumps(_set_mass(float("inf"))(m)),
    "overflowing_float": lambda m: json.dumps(_set_mass(1.0)(m)).replace("1.0", "1e400", 1),
    "huge_integer": lambda m: json.dumps(_set_mass(10**400)(m)),
    "mass_is_text": lambda m: json.dumps(_set_mass("0.5")(m)),
    "ragged_mass": lambda m: json.dumps(_set(("calls", 0, "regions", "mass", 0), [[0.1]])(m)),
    "names_not_a_list": lambda m: json.dumps(_set(("calls", 0, "regions", "names"), "base")(m)),
    "call_negative": lambda m: json.dumps(_set(("calls", 0, "call"), -1)(m)),
    "call_fractional": lambda m: json.dumps(_set(("calls", 0, "call"), 1.5)(m)),
    "success_is_text": lambda m: json.dumps(_set(("episode",), {"success": "yes"})(m)),
    "sink_key_region_a_list": lambda m: json.dumps(_set(("calls", 0, "sink_keys"),
                                                        [{"region": [1], "cells": 1, "mean_share": 0.5}])(m)),
    "grounding_cameras_a_list": lambda m: json.dumps(_set(("grounding",), {"cameras": [], "prefix": {"mean": {}}})(m)),
    "deeply_nested": lambda m: "[" * 100000 + "]" * 100000,
    "not_utf8": lambda m: b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("kind", sorted(BAD_METRICS))
def test_report_leaves_out_an_unusable_episode_in_one_line(good_run, tmp_path, kind):
    run = copy_episode(good_run, tmp_path / "run")
    bad = run / "ep_bad" / "episode_metrics.json"
    bad.parent.mkdir()
    content = BAD_METRICS[kind](good_metrics(good_run))
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = run_cli("report", run)
    assert code == 0, out + err
    assert "Traceback" not in err + out
    skipped = [line for line in err.splitlines() if line.strip()]
    assert len(skipped) == 1 and "ep_bad" in skipped[0] and "unusable" in skipped[0], err
    page = (run / "report.html").read_text()
    assert "ep_good" in page and "Unusable episodes" in page
    after = snapshot(run)
    assert {p: after[p] for p in before} == before  # the metrics files are untouched
    assert set(after) - set(before) == {run / "report.html", run / "run_metrics.json"}
    assert_no_temporaries(run)


def test_report_with_no_usable_episode_is_one_line_and_keeps_the_old_page(tmp_path):
    run = tmp_path / "run"
    (run / "ep").mkdir(parents=True)
    (run / "ep" / "episode_metrics.json").write_text('{"calls": []}')
    (run / "report.html").write_text("old page")
    before = snapshot(run)
    line = one_line_error("report", run)
    assert "no usable episode" in line and "no inference calls" in line
    assert snapshot(run) == before


# == 4. video options, link loops, cameras of another episode ===============================================


@pytest.mark.parametrize("fps, expect", [
    ("0", "--fps"), ("-5", "--fps"), ("nan", "fps"), ("inf", "--fps"), ("241", "--fps"), ("1e300", "--fps"),
    ("abc", "--fps"),
])
def test_video_fps_out_of_range_is_one_line_before_work(episode_dir, tmp_path, fps, expect):
    before = snapshot(tmp_path)
    line = one_line_error("video", episode_dir, "--out", tmp_path / "out.mp4", "--fps", fps)
    assert expect in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["out.avi", "out", "out.mp4.part", "out.gif", "out.mp4 "])
def test_video_output_must_be_an_mp4(episode_dir, tmp_path, name):
    before = snapshot(tmp_path)
    line = one_line_error("video", episode_dir, "--out", tmp_path / name, "--no-progress")
    assert ".mp4" in line
    assert snapshot(tmp_path) == before


def test_frames_of_other_cameras_are_an_error_not_a_plain_video(episode_dir, tmp_path):
    from pi0viz.episode import EpisodeFrames, save_frames

    ep = copy_episode(episode_dir, tmp_path / "ep")
    frames = np.zeros((23, 2, 32, 32, 3), np.uint8)
    save_frames(EpisodeFrames(frames, ["front_cam", "gripper_cam"], [3, 8, 13, 18], fps=10), ep / "frames.npz")
    before = snapshot(tmp_path)
    line = one_line_error("video", ep, "--out", tmp_path / "out.mp4", "--no-progress")
    assert "front_cam" in line and "base_0_rgb" in line
    assert snapshot(tmp_path) == before


def test_frames_showing_only_undrawn_cameras_are_an_error(episode_dir, tmp_path):
    from pi0viz.episode import EpisodeFrames, save_frames
    from pi0viz.episode.source import load_episode
    from pi0viz.errors import EpisodeError

    ep = copy_episode(episode_dir, tmp_path / "ep")
    frames = np.zeros((23, 1, 32, 32, 3), np.uint8)  # the padded right wrist only: no call draws it
    save_frames(EpisodeFrames(frames, ["right_wrist_0_rgb"], [3, 8, 13, 18], fps=10), ep / "frames.npz")
    with pytest.raises(EpisodeError) as info:
        load_episode([ep])
    assert_one_line(str(info.value))
    assert "none of which the bundles draw" in str(info.value)


def test_frames_file_with_absurd_fps_is_one_line(tmp_path):
    from pi0viz.episode.frames import FRAMES_FORMAT, load_frames
    from pi0viz.errors import EpisodeError

    for fps in (float("nan"), float("inf"), 0.0, -1.0, 1e9):
        path = tmp_path / "frames.npz"
        np.savez(path, format=np.asarray(FRAMES_FORMAT), frames=np.zeros((2, 1, 4, 4, 3), np.uint8),
                 camera_names=np.asarray(["base_0_rgb"]), call_steps=np.asarray([0], np.int32),
                 fps=np.asarray(fps, np.float32))
        with pytest.raises(EpisodeError) as info:
            load_frames(path)
        assert_one_line(str(info.value))
        assert "fps" in str(info.value)


@pytest.mark.parametrize("command", ["metrics", "view", "video", "rerun", "report"])
def test_a_symbolic_link_loop_is_one_line(tmp_path, command):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    extra = {"view": ["--out", tmp_path / "p.html"], "video": ["--out", tmp_path / "v.mp4"],
             "rerun": ["--out", tmp_path / "r.rrd"]}.get(command, [])
    before = {p.name for p in tmp_path.iterdir()}
    with guard(60):
        line = one_line_error(command, tmp_path / "a", *extra)
    assert "symbolic link loop" in line
    assert {p.name for p in tmp_path.iterdir()} == before


def test_a_link_loop_inside_a_run_does_not_hang_the_report(good_run, tmp_path):
    run = copy_episode(good_run, tmp_path / "run")
    (run / "ep_good" / "up").symlink_to(run)  # a link back to the run
    (run / "self").symlink_to(run / "self")  # a link to itself
    with guard(120):
        code, out, err = run_cli("report", run)
    assert code == 0, out + err
    assert (run / "report.html").is_file()


# == 5. the Python API names the argument; numpy warnings never reach the user ===============================


def _fields(b: CaptureBundle) -> dict:
    return dict(images=b.images, camera_names=list(b.camera_names), token_pieces=b.token_pieces)


API_CASES = {
    "mask_too_short": (dict(image_masks=[True, False]), "image_masks"),
    "mask_too_long": (dict(image_masks=[True] * 5), "image_masks"),
    "mask_unknown_key": (dict(image_masks={"front": False}), "image_masks"),
    "mask_floats": (dict(image_masks=[0.5, 1.0, 2.0]), "image_masks"),
    "mask_text": (dict(image_masks=["yes", "no", "yes"]), "image_masks"),
    "mask_dict_value_text": (dict(image_masks={"base_0_rgb": "no"}), "image_masks['base_0_rgb']"),
    "mask_ragged": (dict(image_masks=[[True], [True, False]]), "image_masks"),
    "images_float_0_255": ("float255", "images"),
    "images_below_minus_one": ("neg2", "images"),
    "images_nan": ("nan", "images"),
    "images_inf": ("inf", "images"),
    "images_int_over_255": ("int300", "images"),
    "images_int_negative": ("intneg", "images"),
    "images_bool": ("bool", "images"),
    "images_text": ("text", "images"),
    "images_empty": ("empty", "images"),
    "images_two_channels": ("twochan", "images"),
    "images_dict_unknown_camera": ("dict_unknown", "images"),
    "images_dict_float_0_255": ("dict_float255", "images['base_0_rgb']"),
}


def _images(kind: str, b: CaptureBundle):
    img = b.images
    return {
        "float255": img.astype(np.float32), "neg2": img.astype(np.float32) / 255 * 3 - 2,
        "nan": np.full(img.shape, np.nan, np.float32), "inf": np.full(img.shape, np.inf, np.float32),
        "int300": img.astype(np.int64) + 300, "intneg": img.astype(np.int64) - 300,
        "bool": np.ones(img.shape, bool), "text": np.full(img.shape, "a"),
        "empty": np.zeros((1, 3, 0, 0, 3), np.uint8), "twochan": img[..., :2],
        "dict_unknown": {"front": img[0, 0]},
        "dict_float255": {"base_0_rgb": img[0, 0].astype(np.float32)},
    }[kind]


@pytest.fixture(scope="module")
def api_bundle() -> CaptureBundle:
    return small()


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_visualize_attention_names_the_bad_argument(api_bundle, tmp_path, case):
    from pi0viz.render.visualize import visualize_attention

    change, name = API_CASES[case]
    fields = _fields(api_bundle)
    fields.update(change if isinstance(change, dict) else {"images": _images(change, api_bundle)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Pi0vizError) as info:
            visualize_attention(api_bundle.attention, out_dir=tmp_path / "viz", **fields)
    assert_one_line(str(info.value))
    assert str(info.value).startswith(name), str(info.value)
    assert not (tmp_path / "viz").exists()


@pytest.mark.parametrize("field, value", [
    ("images", "float"), ("image_masks", "ints"), ("image_masks", "short"), ("images", "shape"),
])
def test_capture_bundle_refuses_wrong_images_and_masks(api_bundle, field, value):
    arrays = {"images": {"float": api_bundle.images.astype(np.float32), "shape": api_bundle.images[:, :2]},
              "image_masks": {"ints": api_bundle.image_masks.astype(np.int64), "short": api_bundle.image_masks[:, :2]}}
    bad = copy.copy(api_bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Pi0vizError) as info:
            kwargs = {f.name: getattr(bad, f.name) for f in __import__("dataclasses").fields(CaptureBundle)
                      if f.init}
            kwargs[field] = arrays[field][value]
            CaptureBundle(**kwargs)
    assert_one_line(str(info.value))
    assert field in str(info.value)


@pytest.mark.parametrize("kwargs, name", [
    (dict(summaries=""), "summaries"), (dict(summaries=7), "summaries"), (dict(summaries=[1, 2]), "summaries"),
    (dict(summaries="steps+heads"), "summary axes"), (dict(summaries=None), "summaries"),
    (dict(how="median"), "how"), (dict(inference_step=1.5), "inference_step"),
    (dict(inference_step=-1), "inference_step"), (dict(inference_step=True), "inference_step"),
    (dict(batch=3), "batch"), (dict(batch=-1), "batch"), (dict(alpha=float("nan")), "alpha"),
    (dict(alpha=2.0), "alpha"), (dict(alpha="0.5"), "alpha"),
])
def test_summary_options_are_checked_before_anything_is_written(api_bundle, tmp_path, kwargs, name):
    from pi0viz.analysis.summaries import write_call_summaries

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Pi0vizError) as info:
            write_call_summaries(api_bundle, tmp_path / "viz", **kwargs)
    assert_one_line(str(info.value))
    assert name in str(info.value)
    assert not (tmp_path / "viz").exists()


@pytest.mark.parametrize("kwargs, name", [
    (dict(how="sum"), "how"), (dict(per_row=0), "per_row"), (dict(per_row=2.5), "per_row"),
])
def test_episode_strip_options_are_named(api_bundle, tmp_path, kwargs, name):
    from pi0viz.analysis.summaries import episode_strip_from_bundles

    path = save_bundle(api_bundle, tmp_path / "call.npz")
    with pytest.raises(Pi0vizError) as info:
        episode_strip_from_bundles([path], tmp_path / "strip.jpg", **kwargs)
    assert_one_line(str(info.value))
    assert name in str(info.value)
    assert not (tmp_path / "strip.jpg").exists()


@pytest.mark.parametrize("kwargs, name", [
    (dict(batch=-1), "batch"), (dict(batch=True), "batch"), (dict(zoom=True), "zoom"), (dict(title=5), "title"),
    (dict(heads="all"), "heads"),
])
def test_write_viewer_names_the_bad_argument(api_bundle, tmp_path, kwargs, name):
    from pi0viz.viewer import write_viewer

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Pi0vizError) as info:
            write_viewer([api_bundle], tmp_path / "page.html", **kwargs)
    assert_one_line(str(info.value))
    assert name in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_write_viewer_refuses_one_path_instead_of_a_list(api_bundle, tmp_path):
    from pi0viz.viewer import write_viewer

    path = save_bundle(api_bundle, tmp_path / "call.npz")
    with pytest.raises(Pi0vizError) as info:
        write_viewer(str(path), tmp_path / "page.html")
    assert_one_line(str(info.value))
    assert "bundles must be a list" in str(info.value)
    assert not (tmp_path / "page.html").exists()


# == 6. cells from data cannot inject formulas or break a table =============================================


HOSTILE_CELLS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR",
                 "a,b", 'say "hi"', "two\nlines", "plain"]


@pytest.mark.parametrize("text", HOSTILE_CELLS)
def test_csv_cells_from_data_read_back_as_text(tmp_path, text):
    from pi0viz.core.tables import write_csv

    path = write_csv(tmp_path / "t.csv", ["call", text], [["1", "0.5"]])
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 2 and all(len(r) == 2 for r in rows), rows
    cell = rows[0][1]
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert cell.lstrip("'") == text.replace("\r", "\n")
    assert_no_temporaries(tmp_path)


def test_grounding_csv_escapes_camera_names(tmp_path):
    """A bundle whose camera names are formulas: the grounding CSV's header reads back with each name escaped,
    the numbers (negative ones too) stay numbers, and every row has the header's number of cells."""
    from pi0viz.analysis.masks import CallMasks, masks_path, save_masks

    names = ("=cmd|' /C calc'!A0", "+base", "@wrist")
    b = small(camera_names=names)
    b.inference_step = 0
    path = save_bundle(b, tmp_path / "bundles" / "inference_000.npz")
    cov = np.zeros((1, 3, 16, 16), np.float32)
    cov[0, 0, 4:8, 4:8] = 1.0
    save_masks(CallMasks(list(names), ["bowl"], cov, np.array([True, True, False])), masks_path(path))
    code, out, err = run_cli("metrics", tmp_path / "bundles")
    assert code == 0, out + err
    with open(tmp_path / "bundles" / "inference_000.grounding.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    assert all(not c.startswith(("=", "+", "-", "@")) for c in header), header
    assert any(c.startswith("'=cmd") for c in header) and any(c.startswith("'+base") for c in header)
    assert all(len(r) == len(header) for r in rows)
    for r in rows[1:]:
        for cell in r:
            if cell:
                float(cell)  # numbers stay numbers


def test_sweep_results_table_escapes_prompts():
    from pi0viz.sweep.plan import SweepSettings
    from pi0viz.sweep.results import to_markdown

    prompt = "=HYPERLINK(1)|pick up\nthe bowl"
    summary = {"tasks": [{"task": 0, "prompt": prompt, "episodes": 1, "planned": 1, "successes": 1,
                          "success_rate": 1.0}],
               "total": {"episodes": 1, "successes": 1, "success_rate": 1.0}, "timing": {},
               "grounding": None, "grounding_status": "no grounding"}
    text = to_markdown(summary, SweepSettings())
    rows = [line for line in text.splitlines() if line.startswith("| 0 ")]
    assert len(rows) == 1, text
    cells = [c for c in __import__("re").split(r"(?<!\\)\|", rows[0])[1:-1]]
    assert len(cells) == 5, cells
    assert cells[1].strip().startswith("'=HYPERLINK") and "\\|" in cells[1]


@pytest.mark.parametrize("dtype", ["|O", "<V8", "[('a', '<f4')]", "<c8"])
def test_wire_arrays_that_would_need_pickle_are_refused_without_the_advice(dtype):
    """The msgpack-numpy reader of the policy server: object, void and structured dtypes are data it refuses."""
    import msgpack

    from pi0viz.serving.msgpack_numpy import unpackb

    frame = msgpack.packb({b"obs": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": dtype, b"shape": [1]}})
    with pytest.raises(Pi0vizError) as info:
        unpackb(frame)
    assert_one_line(str(info.value))


@pytest.mark.parametrize("case", ["attention_text", "attention_bool", "prompt_not_utf8", "diffusion_times_nan",
                                  "diffusion_times_text", "token_pieces_objects"])
def test_visualize_attention_names_bad_arrays_and_text(api_bundle, tmp_path, case):
    from pi0viz.render.visualize import visualize_attention

    fields = _fields(api_bundle)
    attention = api_bundle.attention
    name = case.rsplit("_", 1)[0] if not case.startswith(("diffusion", "token")) else case.rsplit("_", 1)[0]
    if case == "attention_text":
        attention = np.full(attention.shape, "a")
    elif case == "attention_bool":
        attention = np.ones(attention.shape, bool)
    elif case == "prompt_not_utf8":
        fields["prompt"] = b"\xff\xfe"
        name = "prompt"
    elif case == "diffusion_times_nan":
        fields["diffusion_times"] = [float("nan")] * attention.shape[0]
    elif case == "diffusion_times_text":
        fields["diffusion_times"] = ["soon"] * attention.shape[0]
    elif case == "token_pieces_objects":
        fields["token_pieces"] = [[object()] * api_bundle.token_pieces.shape[-1]]
        name = "token_pieces"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Pi0vizError) as info:
            visualize_attention(attention, out_dir=tmp_path / "viz", **fields)
    assert_one_line(str(info.value))
    assert str(info.value).startswith(name), (name, str(info.value))
    assert not (tmp_path / "viz").exists()


@pytest.mark.parametrize("case, name", [
    ("bundle_path", "bundle"), ("bundle_none", "bundle"), ("options_dict", "options"), ("steps_a_number", "steps"),
    ("alpha_nan", "alpha"), ("batch_out_of_range", "batch_index"),
])
def test_render_bundle_names_the_bad_argument(api_bundle, tmp_path, case, name):
    from pi0viz.render import RenderOptions, render_bundle

    bundle, options = api_bundle, None
    if case == "bundle_path":
        bundle = str(save_bundle(api_bundle, tmp_path / "call.npz"))
    elif case == "bundle_none":
        bundle = None
    elif case == "options_dict":
        options = {"steps": "0"}
    elif case == "steps_a_number":
        options = RenderOptions(steps=7)
    elif case == "alpha_nan":
        options = RenderOptions(alpha=float("nan"))
    elif case == "batch_out_of_range":
        options = RenderOptions(batch_index=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Pi0vizError) as info:
            render_bundle(bundle, tmp_path / "viz", options)
    assert_one_line(str(info.value))
    assert name in str(info.value)
    assert not (tmp_path / "viz").exists()
