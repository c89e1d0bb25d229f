"""Cost of watching a 40-call episode: the attention video and the Rerun recording, against the JPEG tree.

For a LIBERO-shaped episode (40 inference calls, 5 control steps each after 10 wait steps = 210 frames of two
224 x 224 cameras; frames are the shipped real LIBERO scenes, shifted a pixel per step so that every frame
differs), with synthetic pi0-shaped captures of two sizes:
  tiny  [10 steps, 4 layers, 1, 1, 8 heads, 51, 867]  (the tiny pi0 of the demo and the tests)
  full  [10 steps, 18 layers, 1, 1, 8 heads, 51, 867] float16 (pi0 at full size, 127 MB per call)
it measures, in one run:
  (1) aggregation: fusing the selected step of each call (the default: last step, all layers, all tokens);
  (2) the MP4: composing and encoding the 210 frames (imageio-ffmpeg, H.264), its size;
  (3) the .rrd: exporting frames, heat maps, overlays, prompt weights and masses (JPEG images, and raw), size
      per call;
  (4) the JPEG tree of ONE call at that size (all cells; LIBERO's 2 cameras + prompt), extrapolated x 40.
Loading a full-size bundle from disk is timed once and reported apart (the same for every consumer).
The full-size tree (27,000 JPEGs) is the slow part: ~1 min on 2 cores. --skip-full leaves the full size out.

    python benchmarks/episode_bench.py [--calls 40] [--skip-full] [--workers N]

Outputs go to benchmarks/out/episode-<timestamp>/ (gitignored).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


def load() -> str:
    return "load avg %.1f %.1f %.1f" % os.getloadavg()


def rollout(calls: int, wait: int = 10, per_call: int = 5):
    """EpisodeFrames of real LIBERO scenes, shifted 1 px per control step."""
    from pi0viz.episode import EpisodeFrames
    from pi0viz.policy.libero_frames import load_libero_frames as shipped

    scene = shipped()[0]
    n = wait + calls * per_call
    frames = np.empty((n, 2, 224, 224, 3), np.uint8)
    for s in range(n):
        frames[s, 0] = np.roll(scene.image, s % 32, axis=1)
        frames[s, 1] = np.roll(scene.wrist_image, s % 32, axis=0)
    return EpisodeFrames(frames, list(CAMERAS[:2]), wait + per_call * np.arange(calls), fps=10), scene


def bundle_of_size(size: str, scene):
    """A pi0-shaped capture with LIBERO's camera slots (right wrist padded) and the scene's images."""
    from pi0viz.core.synthetic import synthetic_bundle

    layers, dtype = (4, np.float32) if size == "tiny" else (18, np.float16)
    b = synthetic_bundle(num_layers=layers, dtype=dtype, image_masks=(True, True, False))
    b.images[0, 0], b.images[0, 1] = scene.image, scene.wrist_image
    return b


def calls_of(bundle, count: int):
    """The same capture as calls 0..count-1 (an episode without `count` x 127 MB of disk)."""
    for n in range(count):
        bundle.inference_step = n
        yield bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--skip-full", action="store_true", help="only the tiny size")
    ap.add_argument("--workers", type=int, default=None, help="render processes for the JPEG tree")
    args = ap.parse_args()

    from pi0viz.core.bundle import load_bundle, save_bundle
    from pi0viz.episode.rerun_export import RerunOptions, export_rerun
    from pi0viz.episode.source import episode_from_bundles
    from pi0viz.episode.video import VideoOptions, write_video
    from pi0viz.render.engine import RenderJob, RenderOptions, default_workers, run_job

    out = HERE / "out" / time.strftime("episode-%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    workers = args.workers or default_workers()
    frames, scene = rollout(args.calls)
    print(f"episode benchmark -> {out}\n{args.calls} calls, {frames.num_steps} control steps x 2 cameras, "
          f"{os.cpu_count()} cores, render workers {workers}, {load()}")
    rows = []
    for size in ("tiny",) + (() if args.skip_full else ("full",)):
        bundle = bundle_of_size(size, scene)
        print(f"\n[{size}] attention {list(bundle.attention.shape)} {bundle.attention.dtype} = "
              f"{bundle.attention.nbytes / 2**20:.0f} MiB per call  [{load()}]")
        path = out / f"{size}.npz"
        save_bundle(bundle, path)
        t0 = time.perf_counter()
        load_bundle(path)
        t_load = time.perf_counter() - t0

        t0 = time.perf_counter()
        episode = episode_from_bundles(calls_of(bundle, args.calls), frames)
        t_agg = time.perf_counter() - t0

        video = write_video(episode, out / f"{size}.mp4", VideoOptions())
        t0 = time.perf_counter()
        rrd = export_rerun(episode, out / f"{size}.rrd")
        t_rrd = time.perf_counter() - t0
        t0 = time.perf_counter()
        rrd_raw = export_rerun(episode, out / f"{size}_raw.rrd", options=RerunOptions(jpeg_quality=None))
        t_rrd_raw = time.perf_counter() - t0

        t0 = time.perf_counter()
        summary = run_job(RenderJob(bundle, str(out / f"{size}_tree"), 0, RenderOptions(workers=workers)))
        t_tree = time.perf_counter() - t0
        n = args.calls
        print(f"  load one bundle from disk        {t_load:8.2f} s per call ({path.stat().st_size / 1e6:.1f} MB)")
        print(f"  aggregate (fuse selected step)   {t_agg / n:8.3f} s per call, {t_agg:.1f} s for {n} calls")
        print(f"  MP4: {video.frames} frames {video.size[1]}x{video.size[0]}  {video.seconds:8.2f} s"
              f"  {video.bytes / 1e6:.2f} MB ({video.bytes / n / 1e3:.1f} kB per call)")
        rrd_b, raw_b = rrd.stat().st_size, rrd_raw.stat().st_size
        for what, t, size_b in (("JPEG q90", t_rrd, rrd_b), ("raw pixels", t_rrd_raw, raw_b)):
            print(f"  .rrd ({what:10s})                {t:8.2f} s  {size_b / 1e6:.2f} MB "
                  f"({size_b / n / 1e3:.0f} kB per call)")
        tree_b = summary.bytes_written
        print(f"  JPEG tree, one call              {t_tree:8.2f} s  {summary.files_written} files "
              f"{tree_b / 1e6:.0f} MB -> x{n}: {t_tree * n:.0f} s, {tree_b * n / 1e9:.1f} GB")
        rows.append((size, t_agg, video, rrd_b, t_rrd, t_tree * n, summary.bytes_written * n))
        print(f"  [{load()}]")

    print("\nsummary (whole episode):")
    print("| size | video: aggregate + encode | MP4 | .rrd (JPEG) per call | .rrd export | JPEG tree (x calls) |")
    print("|---|---|---|---|---|---|")
    for size, t_agg, video, rrd_b, t_rrd, t_tree, tree_b in rows:
        print(f"| {size} | {t_agg:.1f} + {video.seconds:.1f} s | {video.bytes / 1e6:.1f} MB "
              f"| {rrd_b / args.calls / 1e3:.0f} kB | {t_agg:.1f} + {t_rrd:.1f} s "
              f"| {t_tree:.0f} s, {tree_b / 1e9:.1f} GB |")


if __name__ == "__main__":
    main()
