"""Hostile inputs, one class of bad input at a time (issue 8, "Hardening").

Every case asserts the one-line message a user gets (CLI: exit 1, one line on stderr, no traceback) and that
nothing was lost or left behind: finished files intact, no temporary files. Everything is tiny: small synthetic
bundles, the tiny pi0's parameters, a policy server on loopback whose bad requests never reach the sampler.

Write failures use real file systems: small tmpfs mounts (read-only, 1 MiB, few inodes) when the tests run as
root, and paths that run through a file (no mount needed) everywhere.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import msgpack
import numpy as np
import pytest
from click.testing import CliRunner

from pi0viz.cli import main
from pi0viz.core.bundle import CaptureBundle, load_bundle, save_bundle
from pi0viz.errors import BundleError, CheckpointError, ObservationError, OutputError
from pi0viz.render.engine import RenderOptions

sys.path.insert(0, str(Path(__file__).parent))
from bundle_support import small  # noqa: E402
from extras import mount_tmpfs, require, unmount  # noqa: E402
from hostile_support import assert_no_temporaries, assert_whole_jpegs, files_under, one_line_error  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- helpers --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def guard(seconds: int):
    """Turn a hang into a failure (not a speed measurement: the fixed code answers in milliseconds)."""
    def alarm(signum, frame):
        raise AssertionError(f"still running after {seconds} s: the work was expanded instead of checked")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def mounts(tmp_path):
    """mount(name, options) -> a fresh tmpfs under tmp_path, unmounted after the test."""
    made: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        mount_tmpfs(path, options)
        made.append(path)
        return path

    yield mount
    for path in reversed(made):
        unmount(path)


@pytest.fixture
def bundle_path(tmp_path) -> Path:
    return save_bundle(small(), tmp_path / "call.npz")


def npy_bytes(shape, dtype="<f4", data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + data


def rewrite_npz(src: Path, dst: Path, **members: bytes | None) -> Path:
    """Copy an .npz, replacing (bytes) or dropping (None) members by array name."""
    with zipfile.ZipFile(src) as z:
        out = {n[:-4]: z.read(n) for n in z.namelist()}
    for name, data in members.items():
        if data is None:
            out.pop(name, None)
        else:
            out[name] = data
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in out.items():
            z.writestr(name + ".npy", data)
    return dst


def with_arrays(src: Path, dst: Path, **arrays: np.ndarray | None) -> Path:
    """Copy an .npz with some arrays replaced (as real .npy members) or dropped."""
    members = {}
    for name, value in arrays.items():
        if value is None:
            members[name] = None
        else:
            buf = io.BytesIO()
            np.save(buf, value, allow_pickle=False)
            members[name] = buf.getvalue()
    return rewrite_npz(src, dst, **members)


# == 1. bundles: absurd headers, sizes disagreeing with the layout, broken files =============================


@pytest.mark.parametrize("member, shape, dtype", [
    ("attention", (10**6, 10**6, 1, 1, 8, 51, 867), "<f4"),  # exabytes, from a file of a few KB
    ("images", (1, 3, 10**5, 10**5, 3), "|u1"),
    ("token_ids", (1, 10**10), "<i4"),
])
def test_absurd_header_is_refused_before_allocating(bundle_path, tmp_path, member, shape, dtype):
    bad = rewrite_npz(bundle_path, tmp_path / "bad.npz", **{member: npy_bytes(shape, dtype, b"\0" * 64)})
    tracemalloc.start()
    try:
        with pytest.raises(BundleError) as err:
            load_bundle(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"array '{member}'" in str(err.value) and "header claims" in str(err.value)
    assert str(bad) in str(err.value)
    assert peak < 16 * 2**20, f"allocated {peak / 2**20:.0f} MiB before refusing"


def test_absurd_header_through_render_and_view_is_one_line(bundle_path, tmp_path):
    bad = rewrite_npz(bundle_path, tmp_path / "bad.npz", attention=npy_bytes((10**6, 10**6, 1, 1, 8, 51, 867)))
    assert "header claims" in one_line_error("render", bad, "--out", tmp_path / "tree", "--no-progress")
    assert "header claims" in one_line_error("view", bad, "--out", tmp_path / "page.html")
    assert not (tmp_path / "tree").exists() and not (tmp_path / "page.html").exists()


def test_large_attention_disagreeing_with_the_layout_is_refused_from_its_header(tmp_path):
    """A real, self-consistent 128 MiB attention member whose S does not fit the layout: refused without loading."""
    b = small()
    D, L, B, K, G, Q, S = b.attention.shape
    rows = (128 * 2**20) // (4 * D * L * B * K * G * (S + 1))
    big = np.zeros((D, L, B, K, G, rows, S + 1), np.float32)  # S + 1 keys: one too many for the layout
    dst = tmp_path / "big.npz"
    np.savez(dst, **{**b.to_arrays(), "attention": big})
    del big
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match=f"S = {S + 1} keys.*expects S = {S}") as err:
            load_bundle(dst)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"allocated {peak / 2**20:.0f} MiB before refusing"
    assert str(dst) in str(err.value)


def test_forged_member_size_is_refused(bundle_path, tmp_path):
    """A deflated zip entry whose size fields claim far more than deflate can produce from its compressed bytes."""
    dst = tmp_path / "forged.npz"
    with zipfile.ZipFile(bundle_path) as src, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for name in src.namelist():
            out.writestr(name, src.read(name))
    raw = bytearray(dst.read_bytes())
    fake = (2**31).to_bytes(4, "little")
    with zipfile.ZipFile(dst) as z:
        local = z.getinfo("token_ids.npy").header_offset
    raw[local + 22:local + 26] = fake  # local file header: uncompressed size
    at = raw.find(b"PK\x01\x02")
    while at >= 0:  # central directory entries: find token_ids'
        name_len = int.from_bytes(raw[at + 28:at + 30], "little")
        if raw[at + 46:at + 46 + name_len] == b"token_ids.npy":
            raw[at + 24:at + 28] = fake
        at = raw.find(b"PK\x01\x02", at + 4)
    dst.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="token_ids.*more than deflate can produce"):
        load_bundle(dst)


@pytest.mark.parametrize("content, expect", [
    (b"", "not an .npz archive"),
    (b"\x93NUMPY garbage that is not a zip" * 10, "not an .npz archive"),
    (bytes(range(256)) * 8, "not an .npz archive"),
])
def test_file_that_is_not_an_npz_is_one_line(tmp_path, content, expect):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    line = one_line_error("render", path, "--out", tmp_path / "tree", "--no-progress")
    assert expect in line and str(path) in line and "pickle" not in line


def test_truncated_bundle_is_one_line(bundle_path, tmp_path):
    cut = tmp_path / "cut.npz"
    cut.write_bytes(bundle_path.read_bytes()[: bundle_path.stat().st_size // 2])
    line = one_line_error("view", cut, "--out", tmp_path / "page.html")
    assert "not an .npz archive" in line and str(cut) in line


def test_object_array_member_is_refused(bundle_path, tmp_path):
    bad = rewrite_npz(bundle_path, tmp_path / "obj.npz", camera_names=npy_bytes((3,), "|O", b"\0" * 24))
    with pytest.raises(BundleError, match="camera_names.*object"):
        load_bundle(bad)


@pytest.mark.parametrize("key, value, expect", [
    ("step_indices", np.array([0, 0], np.int32), "step_indices.*duplicate"),
    ("layer_indices", np.array([0, 2, 2], np.int32), "layer_indices.*duplicate"),
    ("layer_indices", np.array([-1, 0, 1], np.int32), "layer_indices.*negative"),
    ("step_indices", np.array([0, -7], np.int32), "step_indices.*negative"),
    ("inference_step", np.array(-3, np.int32), r"inference_step must be an integer in 0\.\.2147483647"),
    ("inference_step", np.array(1e30), "inference_step.*integer"),
    ("num_action_tokens", np.array(2**31 - 1, np.int32), "expects S"),
])
def test_bad_indices_in_a_bundle_are_refused(bundle_path, tmp_path, key, value, expect):
    bad = with_arrays(bundle_path, tmp_path / "bad.npz", **{key: value})
    with pytest.raises(BundleError, match=expect):
        load_bundle(bad)
    line = one_line_error("render", bad, "--out", tmp_path / "tree", "--no-progress", "--workers", "1")
    assert key in line or "S =" in line
    assert not (tmp_path / "tree").exists()  # nothing written, nothing overwritten


# == 2. selections: checked against the capture before anything is expanded ==================================


@pytest.mark.parametrize("flag", ["--steps", "--layers", "--action-tokens"])
def test_huge_range_answers_at_once_and_takes_what_exists(bundle_path, tmp_path, flag):
    out = tmp_path / "tree"
    with guard(20):
        result = CliRunner().invoke(main, ["render", str(bundle_path), "--out", str(out), "--no-progress",
                                           "--workers", "1", flag, "0-100000000000"])
    assert result.exit_code == 0, result.output
    assert assert_whole_jpegs(out) == 2 * 3 * 5 * 4  # every D x L x A cell: 3 cameras + the prompt


@pytest.mark.parametrize("flag, value, expect", [
    ("--steps", "100000000000-200000000000", "holds none of this capture's 0-1"),
    ("--layers", "99999999999999999999", "not in this capture, which has 0-2"),
    ("--action-tokens", "7", "not in this capture, which has 0-4"),
    ("--steps", "-1", "cannot read '-1'"),
    ("--layers", "2-0", "runs backwards"),
    ("--cameras", "nope", "unknown camera"),
    ("--cameras", ",", "unknown camera"),
    ("--inference-step", "-1", "inference step"),
    ("--gamma", "inf", "gamma"),
])
def test_bad_selection_is_one_line_and_writes_nothing(bundle_path, tmp_path, flag, value, expect):
    out = tmp_path / "tree"
    with guard(20):
        line = one_line_error("render", bundle_path, "--out", out, "--no-progress", "--workers", "1",
                              f"{flag}={value}")
    assert expect in line
    assert not out.exists() or not files_under(out)


# == 3. OS errors while writing: one line naming the path and the cause; finished files intact; no temps ======


def test_render_into_a_read_only_folder(bundle_path, mounts):
    ro = mounts("ro", "ro,size=1m")
    line = one_line_error("render", bundle_path, "--out", ro / "tree", "--no-progress", "--workers", "1")
    assert str(ro / "tree") in line and "read-only file system" in line.lower()
    assert not files_under(ro)


def test_render_through_a_file(bundle_path, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    line = one_line_error("render", bundle_path, "--out", tmp_path / "afile" / "tree", "--no-progress")
    assert str(tmp_path / "afile") in line and "not a folder" in line
    line = one_line_error("render", bundle_path, "--out", tmp_path / "afile", "--no-progress")
    assert str(tmp_path / "afile") in line
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_render_out_of_inodes_keeps_finished_files(bundle_path, mounts, workers):
    disk = mounts("inodes", "size=64m,nr_inodes=40")
    line = one_line_error("render", bundle_path, "--out", disk, "--no-progress", "--workers", workers)
    assert "no space or inodes left" in line and str(disk) in line and "--resume" in line
    assert assert_whole_jpegs(disk) > 0  # the files finished before the failure are whole
    assert_no_temporaries(disk)


def test_render_on_a_full_disk_keeps_finished_files_and_resume_finishes(tmp_path, mounts):
    disk = mounts("full", "size=1m")
    path = save_bundle(small(num_layers=6, num_action_tokens=10), tmp_path / "big.npz")
    line = one_line_error("render", path, "--out", disk, "--no-progress", "--workers", "1")
    assert "no space or inodes left" in line and str(disk) in line
    done = assert_whole_jpegs(disk)
    assert done > 0
    assert_no_temporaries(disk)
    # Free space (grow the file system), finish with --resume: the same tree as one uninterrupted render.
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    result = CliRunner().invoke(main, ["render", str(path), "--out", str(disk), "--no-progress", "--workers", "1",
                                       "--resume"])
    assert result.exit_code == 0 and f"resume: kept {done - done % 4}" in result.output, result.output
    fresh = tmp_path / "fresh"
    assert CliRunner().invoke(main, ["render", str(path), "--out", str(fresh), "--no-progress",
                                     "--workers", "1"]).exit_code == 0
    assert {p.relative_to(disk): p.read_bytes() for p in files_under(disk)} == \
        {p.relative_to(fresh): p.read_bytes() for p in files_under(fresh)}


def test_view_into_a_read_only_folder(bundle_path, mounts):
    ro = mounts("ro", "ro,size=1m")
    line = one_line_error("view", bundle_path, "--out", ro / "page.html", "--fused", "side")
    assert str(ro) in line and "read-only file system" in line.lower()


def test_view_through_a_file(bundle_path, tmp_path):
    (tmp_path / "afile").write_text("x")
    line = one_line_error("view", bundle_path, "--out", tmp_path / "afile" / "page.html")
    assert str(tmp_path / "afile") in line and "not a folder" in line


def test_view_on_a_full_disk_leaves_the_old_page_whole(bundle_path, tmp_path, mounts):
    disk = mounts("full", "size=1m")
    CliRunner().invoke(main, ["view", str(bundle_path), "--out", str(disk / "page.html"), "--fused", "side",
                              "--heads", "none"])
    before = {p: p.read_bytes() for p in files_under(disk)}
    assert disk / "page.html" in before
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:  # fill the disk up, then write a page over the old
        while True:
            f.write(bytes(4096))
            f.flush()
    line = one_line_error("view", bundle_path, "--out", disk / "page.html", "--fused", "side", "--heads", "side")
    assert "no space or inodes left" in line and str(disk) in line
    filler.unlink(missing_ok=True)
    assert {p: p.read_bytes() for p in files_under(disk)} == before  # old page and its side data untouched
    assert_no_temporaries(disk)


def test_view_failing_on_a_later_bundle_keeps_the_old_page(bundle_path, tmp_path):
    page = tmp_path / "page.html"
    CliRunner().invoke(main, ["view", str(bundle_path), "--out", str(page), "--fused", "side"])
    before = {p: p.read_bytes() for p in files_under(tmp_path) if p != bundle_path}
    bad = with_arrays(bundle_path, tmp_path / "bad.npz", inference_step=np.array(5, np.int32),
                      attention=small(seed=1).attention * 3)  # probabilities summing to 3
    line = one_line_error("view", bundle_path, bad, "--out", page, "--fused", "side")
    assert "bad.npz" in line or "sum to 1" in line
    after = {p: p.read_bytes() for p in files_under(tmp_path) if p not in (bundle_path, bad)}
    assert after == before
    assert_no_temporaries(tmp_path)


def test_save_bundle_into_a_read_only_folder(mounts):
    ro = mounts("ro", "ro,size=1m")
    with pytest.raises(OutputError, match="read-only file system") as err:
        save_bundle(small(), ro / "call.npz")
    assert str(ro / "call.npz") in str(err.value)


def test_save_bundle_on_a_full_disk_keeps_the_old_bundle(tmp_path, mounts):
    disk = mounts("full", "size=1m")
    old = save_bundle(small(num_steps=1, num_layers=1, num_action_tokens=1), disk / "call.npz")
    before = old.read_bytes()
    with pytest.raises(OutputError, match="no space or inodes left") as err:
        save_bundle(small(num_layers=6, num_action_tokens=20), disk / "call.npz")  # ~4 MB > 1 MiB
    assert str(disk / "call.npz") in str(err.value)
    assert old.read_bytes() == before
    assert_no_temporaries(disk)


def test_demo_into_a_read_only_folder(mounts):
    ro = mounts("ro", "ro,size=1m")
    line = one_line_error("demo", "--out", ro / "demo", "--calls", "1")
    assert str(ro / "demo") in line and "read-only file system" in line.lower()


# == 4. --resume: finished files must be complete JPEGs ======================================================


@pytest.fixture(scope="module")
def fresh_tree(tmp_path_factory):
    """A finished render of the small bundle, and the bundle."""
    root = tmp_path_factory.mktemp("fresh")
    path = save_bundle(small(), root / "call.npz")
    result = CliRunner().invoke(main, ["render", str(path), "--out", str(root / "tree"), "--no-progress",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    return path, root / "tree"


@pytest.mark.parametrize("damage", ["truncate", "empty", "no_end_marker", "not_a_jpeg"])
def test_resume_rerenders_incomplete_jpegs(fresh_tree, tmp_path, damage):
    import shutil

    path, fresh = fresh_tree
    damaged = tmp_path / "damaged"
    shutil.copytree(fresh, damaged)
    victim = sorted(damaged.rglob("fused_attention_on_base_0_rgb.jpg"))[3]
    data = victim.read_bytes()
    victim.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "no_end_marker": data[:-2],
                        "not_a_jpeg": b"GIF89a" + data[6:]}[damage])
    result = CliRunner().invoke(main, ["render", str(path), "--out", str(damaged), "--no-progress",
                                       "--workers", "1", "--resume"])
    assert result.exit_code == 0 and "resume: kept 116 finished files" in result.output  # 1 cell of 4 redone
    assert {p.relative_to(damaged): p.read_bytes() for p in files_under(damaged)} == \
        {p.relative_to(fresh): p.read_bytes() for p in files_under(fresh)}


# == 5. checkpoints: shapes and dtypes against the config before inference; broken files named ===============

ASSET = "physical-intelligence/libero"
GOOD_STATS = {"state": {"mean": [0.0] * 8, "std": [1.0] * 8}, "actions": {"mean": [0.0] * 7, "std": [1.0] * 7}}


@pytest.fixture(scope="module")
def tiny_policy():
    require("jax", "jax")  # the checkpoint and policy cases
    from pi0viz.policy.jax_policy import Policy

    return Policy.tiny(seed=0)


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_policy, tmp_path_factory):
    """The tiny pi0's parameters in openpi's checkpoint layout, with LIBERO norm stats."""
    from pi0viz.model.checkpoint import save_params

    root = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_params(tiny_policy.params, root / "params")
    write_stats(root, GOOD_STATS)
    return root


def write_stats(root: Path, stats: object, raw: str | None = None) -> Path:
    path = root / "assets" / ASSET / "norm_stats.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else json.dumps({"norm_stats": stats}))
    return path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def largest_data_file(root: Path) -> Path:
    return max((p for p in (root / "params").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


def test_tiny_checkpoint_under_the_full_size_config_fails_at_load(tiny_checkpoint):
    from pi0viz.model.config import Pi0Config
    from pi0viz.policy.jax_policy import Policy

    with pytest.raises(CheckpointError) as err:
        Policy.from_checkpoint(tiny_checkpoint, config=Pi0Config.pi0())
    msg = str(err.value)
    # names one parameter, both shapes, and the config the checkpoint does fit
    assert "PaliGemma/" in msg and "checkpoint has" in msg and "config expects" in msg
    assert "tiny" in msg and str(tiny_checkpoint) in msg
    assert "\n" not in msg


def test_tiny_checkpoint_under_the_full_size_config_through_demo_and_serve(tiny_checkpoint):
    for command in (["demo", "--calls", "1"], ["serve"]):
        line = one_line_error(*command, "--checkpoint", tiny_checkpoint)
        assert "config expects" in line and "Pi0Config.tiny" in line


def test_wrong_parameter_dtype_is_named(tiny_policy, tmp_path):
    import jax.numpy as jnp

    from pi0viz.model.checkpoint import load_params, save_params

    save_params({"state_proj": {"kernel": jnp.zeros((32, 64), jnp.int32)}}, tmp_path / "params")
    with pytest.raises(CheckpointError, match="state_proj/kernel is stored as int32; expected a floating") as err:
        load_params(tmp_path / "params", config=tiny_policy.config)
    assert str(tmp_path / "params") in str(err.value)


def test_non_finite_parameter_is_an_error(tmp_path):
    require("jax", "jax")
    import jax.numpy as jnp

    from pi0viz.model.checkpoint import load_params, save_params

    kernel = jnp.zeros((32, 64), jnp.float32).at[3, 5].set(jnp.nan)
    save_params({"state_proj": {"kernel": kernel}}, tmp_path / "params")
    with pytest.raises(CheckpointError, match="state_proj/kernel holds non-finite values") as err:
        load_params(tmp_path / "params")
    assert str(tmp_path / "params") in str(err.value)


@pytest.mark.parametrize("damage", ["missing_params", "missing_metadata", "truncated", "corrupted"])
def test_broken_checkpoint_files_name_the_path(tiny_checkpoint, tiny_policy, tmp_path, damage):
    from pi0viz.policy.jax_policy import Policy

    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    if damage == "missing_params":
        import shutil

        shutil.rmtree(ckpt / "params")
        named = ckpt / "params"
    elif damage == "missing_metadata":
        (ckpt / "params" / "_METADATA").unlink()
        named = ckpt / "params"
    elif damage == "truncated":
        victim = largest_data_file(ckpt)
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
        named = ckpt / "params"
    else:  # the tree description overwritten with bytes that are not JSON
        (ckpt / "params" / "_METADATA").write_bytes(bytes(range(256)) * 4)
        named = ckpt / "params"
    with pytest.raises(CheckpointError) as err:
        Policy.from_checkpoint(ckpt, config=tiny_policy.config, dtype="float32")
    assert str(named) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("raw, expect", [
    ('{"norm_stats": {', "not readable JSON"),
    (json.dumps({"norm_stats": {**GOOD_STATS, "state": {"mean": [float("nan")] * 8, "std": [1.0] * 8}}}),
     "finite"),
    (json.dumps({"norm_stats": {"actions": GOOD_STATS["actions"]}}), "'state'"),
    (json.dumps({"norm_stats": {**GOOD_STATS, "state": {"mean": "zero", "std": [1.0] * 8}}}), "numbers"),
    (json.dumps([1, 2, 3]), "expected {'norm_stats'"),
    (None, "no norm stats"),
])
def test_bad_norm_stats_file_is_named(tiny_checkpoint, tiny_policy, tmp_path, raw, expect):
    from pi0viz.policy.jax_policy import Policy

    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    path = ckpt / "assets" / ASSET / "norm_stats.json"
    if raw is None:
        path.unlink()
    else:
        path.write_text(raw)
    with pytest.raises(CheckpointError, match=expect) as err:
        Policy.from_checkpoint(ckpt, config=tiny_policy.config, dtype="float32")
    assert str(path) in str(err.value)


def test_missing_checkpoint_folder_through_the_cli(tmp_path):
    for command in (["demo", "--calls", "1"], ["serve"]):
        line = one_line_error(*command, "--checkpoint", tmp_path / "nowhere")
        assert str(tmp_path / "nowhere") in line


# == 6. numbers from users, checked after conversion to the model's dtype ====================================


def frame_obs():
    from pi0viz.policy.libero_frames import load_libero_frames

    return load_libero_frames()[0].observation()


@pytest.mark.parametrize("state, expect", [
    (np.full(8, 1e39), "overflows float32"),  # finite as float64, inf as float32
    (np.array([1e38] * 8), "overflows float32"),  # finite in float32, but the z-score (x - mean) / std is not
    (np.array([np.nan] * 8), "NaN or inf"),
])
def test_state_that_overflows_the_model_dtype_is_an_error(tiny_policy, state, expect):
    policy = tiny_policy
    stats = {"state": {"mean": np.full(8, -1e38), "std": np.full(8, 0.5)}, "actions": GOOD_STATS["actions"]}
    from pi0viz.policy.jax_policy import Policy

    from pi0viz.policy.configs import make_transforms

    strict = Policy(policy.params, policy.config, make_transforms(policy.config, policy.tokenizer, stats))
    with pytest.raises(ObservationError, match=expect):
        strict.prepare({**frame_obs(), "observation/state": state})


def test_noise_that_overflows_float32_is_an_error(tiny_policy):
    noise = np.full((tiny_policy.config.action_horizon, tiny_policy.config.action_dim), 1e39)
    with pytest.raises(ObservationError, match="noise.*overflows float32"):
        tiny_policy.infer(frame_obs(), noise=noise)


# == 7. the policy server: short reasons, no tracebacks or server paths, range-checked integers ===============


@pytest.fixture(scope="module")
def server(tiny_policy):
    from pi0viz.serving.server import PolicyServer

    srv = PolicyServer(tiny_policy, port=0)
    srv.start_in_thread()
    yield srv
    srv.stop()


def ask(port: int, payload: bytes | str) -> str | bytes:
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
        ws.recv(timeout=30)  # metadata
        ws.send(payload)
        return ws.recv(timeout=120)


def assert_short_reason(reply: str | bytes) -> str:
    assert isinstance(reply, str), "expected an error reply"
    assert "Traceback" not in reply and "\n" not in reply
    assert str(ROOT) not in reply and "site-packages" not in reply and ".py" not in reply
    return reply


def packed(obs: dict) -> bytes:
    from pi0viz.serving import msgpack_numpy

    return msgpack_numpy.packb(obs)


@pytest.mark.parametrize("extra, expect", [
    ({"pi0viz/inference_step": 2**63 - 1}, "'pi0viz/inference_step' must be an integer in 0..2147483647"),
    ({"pi0viz/inference_step": -1}, "'pi0viz/inference_step' must be an integer in 0..2147483647"),
    ({"observation/state": np.full(8, 1e39)}, "overflows float32"),
    ({"observation/state": np.zeros(8, bool)}, "observation/state"),
    ({"prompt": b"\xff\xfe not utf-8"}, "UTF-8"),
    ({"observation/image": np.zeros((0, 4, 3), np.uint8)}, "empty"),
])
def test_bad_observation_gets_a_short_reason(server, extra, expect):
    reply = assert_short_reason(ask(server.port, packed({**frame_obs(), **extra})))
    assert "bad request" in reply and expect in reply


@pytest.mark.parametrize("payload, expect", [
    (b"", "expected one msgpack map"),
    (b"\xc1\xc1\xc1", "expected one msgpack map"),
    ("a text frame", "expected a binary frame"),
    (b"\x93\x01\x02\x03", "expected one msgpack map"),  # a list
    (b"\x81\x01\x02", "expected one msgpack map"),  # {1: 2}: int keys
    (b"\x91" * 5000 + b"\x01", "nested too deeply"),
    (msgpack.packb({"observation/state": {b"__ndarray__": True, b"data": b"", b"dtype": "<f4",
                                          b"shape": [10**12, 10**12]}}, use_bin_type=True),
     "needs 4000000000000000000000000 bytes, got 0"),  # an absurd shape claimed over the wire
])
def test_garbage_frame_says_what_was_expected(server, payload, expect):
    reply = assert_short_reason(ask(server.port, payload))
    assert expect in reply


def test_internal_failure_is_logged_not_sent(tiny_policy, caplog):
    """A real failure inside inference (parameters missing a leaf): the client gets a short reason only."""
    from pi0viz.model.init import flatten, unflatten
    from pi0viz.policy.jax_policy import Policy
    from pi0viz.serving.server import PolicyServer

    flat = flatten(tiny_policy.params)
    flat.pop("action_out_proj/kernel")
    broken = Policy(unflatten(flat), tiny_policy.config, tiny_policy.transforms)
    srv = PolicyServer(broken, port=0)
    srv.start_in_thread()
    try:
        with caplog.at_level("ERROR", logger="pi0viz.serving.server"):
            reply = assert_short_reason(ask(srv.port, packed(frame_obs())))
    finally:
        srv.stop()
    assert "internal error" in reply and "server log" in reply
    assert any(r.exc_info for r in caplog.records), "the traceback must go to the server's log"


def test_serve_and_view_ports_out_of_range_are_one_line(bundle_path, tmp_path):
    line = one_line_error("view", bundle_path, "--out", tmp_path / "p.html", "--serve", "--port", "99999")
    assert "99999" in line and "0..65535" in line


# == 8. a padded camera is skipped even without image masks ===================================================


def test_padded_camera_is_found_from_the_attention(tmp_path):
    from pi0viz.render.visualize import visualize_attention

    b = small(image_masks=(True, True, False))  # openpi masking: exactly 0 on every key of the third camera
    assert np.all(b.attention[..., 2 * 256:3 * 256] == 0)
    summary = visualize_attention(b.attention, images=b.images, camera_names=b.camera_names,
                                  token_pieces=b.token_pieces, inference_step=0, out_dir=tmp_path,
                                  options=RenderOptions(workers=1))
    names = {p.name for p in files_under(tmp_path)}
    assert names == {"fused_attention_on_base_0_rgb.jpg", "fused_attention_on_left_wrist_0_rgb.jpg",
                     "fused_attention_on_text.jpg"}
    assert "right_wrist_0_rgb" in str(summary) and "padded" in str(summary)
    # the viewer sees the same
    from pi0viz.viewer.build import write_viewer

    page = write_viewer([CaptureBundle(**{**b.__dict__, "image_masks": np.ones((1, 3), bool)})],
                        tmp_path / "page.html")
    text = page.read_text()
    assert '"imageMasks":[true,true,false]' in text
