"""The one writer (pi0viz.core.writes): every output gets the mode a plain open() would give it, a failed write
leaves the old file byte-identical and no temporary, and encoder outputs (ffmpeg, Rerun) replace a file only once
they read back.

Full disks are real: a small tmpfs when the tests run as root (CI does); elsewhere a read-only folder (chmod)
stands in where any write failure will do, and the encoder-on-a-full-disk tests skip locally.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from episode_support import write_episode
from extras import mount_tmpfs, require, unmount

from umask_support import assert_umask_modes, modes_under_umasks

from pi0viz.cli import main
from pi0viz.core.media_check import check_mp4, check_rrd
from pi0viz.core.writes import (
    StagedFolder,
    atomic_write,
    replace_folder,
    replace_verified,
    write_in,
)
from pi0viz.errors import OutputError



def hidden(root: Path) -> list[Path]:
    """Temporaries left anywhere under root (the writer's are hidden: `.name.token.tmp[.suffix]`)."""
    return sorted(p for p in root.rglob(".*"))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system of `disk` up, then free `leave` bytes again; returns the filler file."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as f:
        while True:
            f.write(bytes(4096))
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh 1 MiB tmpfs (root only: skipped locally, a failure under CI=true)."""
    disk = mount_tmpfs(tmp_path / "disk", "size=1m")
    yield disk
    unmount(disk)


@pytest.fixture
def unwritable(tmp_path):
    """(folder, expected cause): a full 1 MiB tmpfs when mountable (root), else a folder made read-only by chmod.
    The folder already holds `old.bin` (b"old" * 100) and `old_data/a.js`."""
    (tmp_path / "disk").mkdir()
    if os.geteuid() == 0:
        disk = mount_tmpfs(tmp_path / "disk", "size=1m")
        (disk / "old.bin").write_bytes(b"old" * 100)
        (disk / "old_data").mkdir()
        (disk / "old_data" / "a.js").write_text("old")
        fill(disk)
        yield disk, "disk full (no space or inodes left on the device)"
        unmount(disk)
    else:  # chmod does not bind root, hence the tmpfs above
        disk = tmp_path / "disk"
        (disk / "old.bin").write_bytes(b"old" * 100)
        (disk / "old_data").mkdir()
        (disk / "old_data" / "a.js").write_text("old")
        disk.chmod(0o555)
        yield disk, "permission denied"
        disk.chmod(0o755)


# == the mode a plain open() gives ==============================================================================

_MODES_SCRIPT = r"""
import json, os, sys
os.umask(int(sys.argv[1], 8))  # before anything is imported: the writer reads it once per process
sys.path.insert(0, sys.argv[3])
from pathlib import Path
import numpy as np
from episode_support import write_episode
from pi0viz.analysis.masks import CallMasks, masks_path, save_masks
from pi0viz.analysis.metrics import analyze_bundles
from pi0viz.core.bundle import load_bundle
from pi0viz.core.writes import atomic_write
from pi0viz.episode.rerun_export import export_rerun
from pi0viz.episode.source import load_episode
from pi0viz.episode.video import write_video
from pi0viz.render import RenderOptions, render_bundle
from pi0viz.viewer import write_viewer

out = Path(sys.argv[2])
episode = write_episode(out / "episode")                                    # bundles (NPZ), frames.npz
bundles = sorted((episode / "bundles").glob("inference_*.npz"))
b = load_bundle(bundles[0])
cov = np.zeros((1, len(b.camera_names), 16, 16), np.float32)
cov[0, 0, 2:6, 2:6] = 1.0
save_masks(CallMasks(list(b.camera_names), ["bowl_1"], cov, np.array([True, True, False])), masks_path(bundles[0]))
analyze_bundles([episode / "bundles"])                                      # metrics JSON, grounding CSV
render_bundle(b, out / "tree", RenderOptions(workers=1, steps=[1], layers=[0]))  # JPEG tree
write_viewer(bundles, out / "page.html", fused="side", heads="side")        # HTML + <stem>_data/ side folder
write_video(load_episode([episode]), out / "episode.mp4")                   # MP4 (ffmpeg)
export_rerun(load_episode([episode]), out / "episode.rrd")                  # RRD (Rerun)
atomic_write(out / "plain.txt", "x")
modes = {str(p.relative_to(out)): [p.is_dir(), p.stat().st_mode & 0o777] for p in out.rglob("*")}
print(json.dumps(modes))
"""


def test_every_output_gets_the_mode_a_plain_open_gives(tmp_path):
    require("imageio_ffmpeg", "video")
    require("rerun", "rerun")
    for mask, modes in modes_under_umasks(_MODES_SCRIPT, tmp_path).items():
        names = set(modes)
        for must in ("plain.txt", "episode.mp4", "episode.rrd", "page.html", "page_data", "episode/frames.npz",
                     "episode/bundles/inference_000.npz", "episode/bundles/inference_000.masks.npz",
                     "episode/bundles/inference_000.metrics.json", "episode/bundles/inference_000.grounding.csv",
                     "episode/bundles/episode_metrics.json"):
            assert must in names, (must, sorted(names))
        assert any(n.endswith(".jpg") and n.startswith("tree/") for n in names)
        assert any(n.startswith("page_data/") and n.endswith(".js") for n in names)
        assert_umask_modes(mask, modes)


# == failures leave the old file and no temporary ===============================================================


def test_atomic_write_whose_writer_raises_keeps_the_old_file(tmp_path):
    old = atomic_write(tmp_path / "m.json", b'{"old": 1}')

    def half(f):
        f.write(b'{"new":')
        raise RuntimeError("the writer broke halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        atomic_write(old, half)
    assert old.read_bytes() == b'{"old": 1}' and not hidden(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # interrupted: the same cleanup
        atomic_write(old, lambda f: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert old.read_bytes() == b'{"old": 1}' and not hidden(tmp_path)


def test_atomic_write_hook_failure_keeps_the_old_file(tmp_path):
    old = atomic_write(tmp_path / "page.html", "old")
    with pytest.raises(OutputError, match="side data"):
        atomic_write(old, "new", before_replace=lambda: (_ for _ in ()).throw(OutputError("side data failed")))
    assert old.read_text() == "old" and not hidden(tmp_path)


def test_writes_into_a_full_or_read_only_folder_keep_the_old_files(unwritable):
    disk, cause = unwritable
    before = snapshot(disk)
    with pytest.raises(OutputError) as err:
        atomic_write(disk / "old.bin", bytes(2 << 20))  # 2 MiB > the 1 MiB disk
    assert str(err.value) == f"cannot write {disk / 'old.bin'}: {cause}"
    with pytest.raises(OutputError, match=cause.replace("(", r"\(").replace(")", r"\)")):  # the render's hot path
        write_in(str(disk), "old.bin", bytes(2 << 20), "resume")
    with pytest.raises(OutputError, match=r"\(no space|permission denied"):
        replace_folder(disk / "old_data", lambda tmp: (tmp / "a.js").write_bytes(bytes(2 << 20)))
    staged = StagedFolder(disk / "old_data")
    with pytest.raises(OutputError, match=r"old_data"):
        staged.write("b.js", bytes(2 << 20))
    with pytest.raises(OutputError):
        replace_verified(disk / "old.bin", lambda tmp: tmp.write_bytes(bytes(2 << 20)), lambda tmp: None)
    assert snapshot(disk) == before and not hidden(disk)


def test_replace_verified_refuses_a_broken_mp4_and_keeps_the_old_one(tmp_path):
    old = tmp_path / "v.mp4"
    old.write_bytes(b"old video")
    seen = []

    def produce(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.name.startswith(".")  # same folder, suffix
        tmp.write_bytes(os.urandom(4096))

    with pytest.raises(OutputError) as err:
        replace_verified(old, produce, lambda tmp: check_mp4(tmp, frames=3))
    line = str(err.value)
    assert line.startswith(f"cannot write {old}: the written file does not read back (not an MP4")
    assert "\n" not in line and "old file is kept" in line
    assert old.read_bytes() == b"old video" and not seen[0].exists() and not hidden(tmp_path)
    # An encoder that writes nothing, or fails with an OS error: the same.
    with pytest.raises(OutputError, match="the encoder wrote no file"):
        replace_verified(old, lambda tmp: None, lambda tmp: check_mp4(tmp))
    with pytest.raises(OutputError, match="broken pipe"):
        replace_verified(old, lambda tmp: (tmp.write_bytes(b"x"), _raise(BrokenPipeError(32, "broken pipe"))),
                         check_mp4)
    assert old.read_bytes() == b"old video" and not hidden(tmp_path)


def _raise(err: BaseException) -> None:
    raise err


def test_replace_folder_swaps_whole_or_not_at_all(tmp_path):
    data = tmp_path / "page_data"
    replace_folder(data, lambda tmp: (tmp / "a.js").write_text("1"))
    assert snapshot(data) == {"a.js": b"1"}
    with pytest.raises(ValueError, match="bad chunk"):
        replace_folder(data, lambda tmp: ((tmp / "b.js").write_text("2"), _raise(ValueError("bad chunk"))))
    assert snapshot(data) == {"a.js": b"1"} and not hidden(tmp_path)
    replace_folder(data, lambda tmp: (tmp.mkdir(), (tmp / "c.js").write_text("3")), create=False)  # orbax-like
    assert snapshot(data) == {"c.js": b"3"} and not hidden(tmp_path)
    staged = StagedFolder(data)
    staged.write("d.js", "4")
    staged.abort()
    assert snapshot(data) == {"c.js": b"3"} and not hidden(tmp_path)


# == encoders: MP4 and RRD read back before they replace anything ================================================


def test_check_mp4_and_check_rrd_count_what_was_written_and_refuse_cut_files(tmp_path):
    imageio = require("imageio.v2", "video")
    require("imageio_ffmpeg", "video")
    require("rerun", "rerun")
    from pi0viz.episode.rerun_export import export_rerun
    from pi0viz.episode.source import load_episode
    from pi0viz.episode.video import write_video

    episode = load_episode([write_episode(tmp_path / "episode")])
    video = write_video(episode, tmp_path / "e.mp4")
    with imageio.get_reader(str(video.path), format="FFMPEG") as reader:
        decoded = sum(1 for _ in reader)
    assert check_mp4(video.path) == video.frames == decoded == 23
    rrd = export_rerun(episode, tmp_path / "e.rrd")
    assert check_rrd(rrd) > 1  # store info, then chunks (Rerun batches rows into them)
    for path, check in ((video.path, check_mp4), (rrd, check_rrd)):
        data = path.read_bytes()
        cut = tmp_path / f"cut{path.suffix}"
        for size in (len(data) - 1, len(data) // 2, 40, 0):
            cut.write_bytes(data[:size])
            with pytest.raises(ValueError) as err:
                check(cut)
            assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="23 frames in the file, 24 were written"):
        check_mp4(video.path, frames=24)


@pytest.mark.parametrize("output", ["video", "rerun"])
def test_encoder_on_a_full_disk_keeps_the_old_file_and_says_so_in_one_line(tmp_path, tmpfs, output):
    require("imageio_ffmpeg", "video")
    if output == "rerun":
        require("rerun", "rerun")
    episode = write_episode(tmp_path / "episode")
    out = tmpfs / ("e.mp4" if output == "video" else "e.rrd")
    assert CliRunner().invoke(main, [output, str(episode), "--out", str(out), "--no-progress"]).exit_code == 0
    before = out.read_bytes()
    (check_mp4 if output == "video" else check_rrd)(out)
    fill(tmpfs, leave=16 << 10)  # room for the encoder to start, not to finish
    # Another look at the same episode (other content: layer 0 only), over the old one.
    result = CliRunner().invoke(main, [output, str(episode), "--out", str(out), "--no-progress", "--layers", "0"])
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stderr == f"pi0viz {output}: error: cannot write {out}: disk full (no space or inodes left on " \
                            "the device)\n", result.stderr
    assert out.read_bytes() == before and not hidden(tmpfs)
