"""Rendering speed of one full pi0 inference call, against a naive renderer and against the I/O floor.

In one run, with the same number of worker processes for all three:
  (a) pi0viz: rendering of a pi0-shaped call (10 steps x 18 layers x 50 action tokens = 9,000 cells,
      3 cameras + text = 36,000 JPEGs), in a fresh process, into a fresh folder;
  (b) naive: matplotlib, one figure per file (imshow + overlay + savefig), on a sample of cells,
      extrapolated to the call;
  (c) floor: encoding + writing the same number of JPEGs of the same sizes (and the same folder tree) with
      no rendering at all: what any renderer has to pay.
Targets: a / c <= 1.5, b / a >= 60, peak memory <= 1.5 GiB for a float32 call. (a) and (c) alternate for
--rounds rounds and the minimum of each is compared (other jobs on a shared machine only ever add time).
(a) is timed from the loaded bundle to the last file (fusion included); loading the .npz is printed apart.

    python benchmarks/render_bench.py [--workers N] [--naive-cells 40] [--quality 85]

Outputs go to benchmarks/out/<timestamp>/ (gitignored); nothing is deleted (file creation right after a big
`rm -rf` is ~10x slower on some disks, which would distort the next run). The machine may be shared: the
load average is printed with every figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load() -> str:
    return "load avg %.1f %.1f %.1f" % os.getloadavg()


# -- (a) pi0viz, in a fresh process ----------------------------------------------------------------------


def child_render(bundle_path: str, out: str, workers: int, quality: int) -> None:
    """Run in a subprocess: load, prepare, render; print timings and peak memory as JSON."""
    from pi0viz.core.bundle import load_bundle
    from pi0viz.render.engine import RenderJob, RenderOptions, run_job

    t0 = time.perf_counter()
    bundle = load_bundle(bundle_path)
    t1 = time.perf_counter()
    cpu0 = time.process_time()
    job = RenderJob(bundle, out, 0, RenderOptions(workers=workers, quality=quality))
    del bundle  # the job holds only uint8 levels and painters
    t2 = time.perf_counter()
    summary = run_job(job)
    t3 = time.perf_counter()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, reaped by run_job
    print(json.dumps({
        "cpu_s": time.process_time() - cpu0 + kids.ru_utime + kids.ru_stime,
        "load_s": t1 - t0, "prepare_s": t2 - t1, "write_s": t3 - t2, "files": summary.files_written,
        "bytes": summary.bytes_written, "workers": summary.workers,
        "maxrss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "maxrss_child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


# -- (c) the floor ----------------------------------------------------------------------------------------

_PANELS: list[np.ndarray] = []
_QUALITY = 85


def _floor_task(args: tuple[str, list[str], bool]) -> int:
    import simplejpeg

    from pi0viz.render.files import write_atomic

    folder, names, atomic = args
    os.makedirs(folder, exist_ok=True)
    n = 0
    for panel, name in zip(_PANELS, names):
        data = simplejpeg.encode_jpeg(panel, quality=_QUALITY, colorspace="RGBX", colorsubsampling="420")
        if atomic:  # what pi0viz pays for "no partial files": temporary name + rename
            write_atomic(os.path.join(folder, name), data)
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        n += 1
    return n


# -- (b) naive matplotlib -----------------------------------------------------------------------------------

_NAIVE: dict = {}


def _naive_task(args: tuple[str, int, int, int]) -> int:
    """One cell the obvious way: a matplotlib figure per file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder, d, l, a = args
    os.makedirs(folder, exist_ok=True)
    fused, images, names, regions, pieces = (_NAIVE[k] for k in ("fused", "images", "names", "regions", "pieces"))
    values = fused[d, l, a]
    top = values.max()
    for c, name in enumerate(names):
        _, s, e = regions[c]
        heat = values[s:e].reshape(16, 16)
        fig, ax = plt.subplots(figsize=(2.24, 2.7), dpi=100)
        ax.imshow(images[c])
        ax.imshow(np.kron(heat, np.ones((14, 14))), cmap="inferno", alpha=0.6, vmin=0, vmax=top)
        ax.set_title(f"{name}\nmax {heat.max():.3f}", fontsize=7)
        ax.axis("off")
        fig.savefig(os.path.join(folder, f"fused_attention_on_{name}.jpg"))
        plt.close(fig)
    _, s, e = regions[-1]
    fig, ax = plt.subplots(figsize=(4.48, 1.0), dpi=100)
    ax.axis("off")
    cmap = plt.get_cmap("inferno")
    x, y = 0.0, 0.8
    for piece, v in zip(pieces, values[s:e]):
        t = ax.text(x, y, piece, fontsize=8, transform=ax.transAxes,
                    bbox=dict(facecolor=cmap(v / top), edgecolor="none", pad=1))
        x += 0.012 * (len(piece) + 2)
        if x > 0.9:
            x, y = 0.0, y - 0.3
    fig.savefig(os.path.join(folder, "fused_attention_on_text.jpg"))
    plt.close(fig)
    return len(names) + 1


# -- driver ----------------------------------------------------------------------------------------------


def tree_size(root: Path) -> tuple[int, int]:
    """(bytes of content, bytes allocated on disk) of every file under root."""
    content = allocated = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            content += st.st_size
            allocated += st.st_blocks * 512
    return content, allocated


def main() -> None:
    global _PANELS, _QUALITY
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=None, help="processes for (a), (b), (c); default all cores")
    ap.add_argument("--naive-cells", type=int, default=40, help="cells rendered by the naive renderer")
    ap.add_argument("--quality", type=int, default=85)
    ap.add_argument("--rounds", type=int, default=2, help="alternating (c), (a) rounds; the minimum of each counts")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_render(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]))
        return

    from pi0viz.core.bundle import save_bundle
    from pi0viz.core.fusion import fuse_call
    from pi0viz.core.synthetic import place_hot_key, synthetic_bundle
    from pi0viz.render.engine import RenderJob, RenderOptions, default_workers
    from pi0viz.render.files import cell_dir

    workers = args.workers or default_workers()
    out = HERE / "out" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    print(f"pi0viz render benchmark -> {out}\nworkers {workers}, JPEG quality {args.quality}, {os.cpu_count()} cores, "
          f"{load()}")

    # A pi0-shaped float32 call: 3 cameras (all unmasked), 48 prompt slots, 50 actions, 18 layers, 10 steps.
    bundle = synthetic_bundle(dtype=np.float32)
    rng = np.random.default_rng(0)
    lay = bundle.layout
    for d in range(10):  # a few hot spots so the maps are not all flat
        for l in range(0, 18, 3):
            place_hot_key(bundle, step=d, layer=l, action_token=int(rng.integers(50)), head=int(rng.integers(8)),
                          key=int(rng.integers(lay.camera_region(0).start, lay.camera_region(2).stop)), mass=0.6)
    bundle_path = out / "call_float32.npz"
    save_bundle(bundle, bundle_path)
    D, L, A = 10, 18, 50
    cells = D * L * A
    print(f"call: attention {list(bundle.attention.shape)} float32 = {bundle.attention.nbytes / 2**20:.0f} MiB, "
          f"{cells} cells, {cells * 4} files")

    # Representative panels for the floor: exactly what (a) encodes, for a few cells.
    job = RenderJob(bundle, str(out / "unused"), 0, RenderOptions(workers=1, quality=args.quality))
    names = job.cell_files()
    samples = [[np.ascontiguousarray(p.view(np.uint8).reshape(*p.shape, 4)) for p in job.panels(d, l, a)]
               for d, l, a in [(0, 0, 0), (5, 9, 25), (9, 17, 49)]]

    # (c) floor and (a) pi0viz, alternated for --rounds rounds into fresh folders; the minimum of each is the
    # figure (on a shared machine other jobs only ever add time).
    _PANELS, _QUALITY = samples[1], args.quality
    floors, atomic_floors, renders = [], [], []
    floor_cpu, atomic_floor_cpu, render_cpu = [], [], []
    for r in range(args.rounds):
        for atomic, times in ((False, floors), (True, atomic_floors)):
            floor_root = out / f"c_floor_{r}{'_atomic' if atomic else ''}" / "inference_timestep_0"
            tasks = [(cell_dir(str(floor_root), d, a, l), names, atomic)
                     for d in range(D) for a in range(A) for l in range(L)]
            load_c0 = load()
            t0, cpu0 = time.perf_counter(), _children_cpu()
            with mp.get_context("fork").Pool(workers) as pool:
                n_floor = sum(pool.imap_unordered(_floor_task, tasks, chunksize=L))
                pool.close()
                pool.join()  # reaped: their CPU time is now counted
            times.append(time.perf_counter() - t0)
            (atomic_floor_cpu if atomic else floor_cpu).append(_children_cpu() - cpu0)
            what = "encode + atomic write (tmp + rename)" if atomic else "encode + write"
            print(f"[round {r}] (c{'+' if atomic else ''}) floor: {what} {n_floor} JPEGs: {times[-1]:.2f} s, "
                  f"CPU {(atomic_floor_cpu if atomic else floor_cpu)[-1]:.2f} s  [{load_c0} -> {load()}]")

        load_a0 = load()
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, __file__, "--child", str(bundle_path), str(out / f"a_pi0viz_{r}"),
                              str(workers), str(args.quality)], capture_output=True, text=True, check=True)
        t_a_total = time.perf_counter() - t0
        a = json.loads(res.stdout.strip().splitlines()[-1])
        renders.append(a["prepare_s"] + a["write_s"])
        render_cpu.append(a["cpu_s"])
        print(f"[round {r}] (a) pi0viz: {a['files']} files: load {a['load_s']:.2f} s + fuse/levels {a['prepare_s']:.2f} s"
              f" + paint/encode/write {a['write_s']:.2f} s = {renders[-1]:.2f} s render, CPU {a['cpu_s']:.2f} s"
              f" ({t_a_total:.2f} s wall incl."
              f" Python start and load) [{load_a0} -> {load()}]")
        print(f"          peak memory: parent {a['maxrss_parent_mb']:.0f} MB, largest worker {a['maxrss_child_mb']:.0f} MB"
              " (workers are forked: most pages shared)")
    t_floor, t_atomic, t_a = min(floors), min(atomic_floors), min(renders)

    # (b) naive matplotlib on a sample, same worker count, extrapolated
    _NAIVE.update(fused=fuse_call(bundle.attention, lay, bundle.image_masks, bundle.token_mask).fused,
                  images=bundle.images[0], names=list(bundle.camera_names),
                  regions=fuse_call(bundle.attention[:1, :1], lay, bundle.image_masks, bundle.token_mask).regions,
                  pieces=[p for p, m in zip(bundle.token_pieces[0], bundle.token_mask[0]) if m])
    picks = [(int(rng.integers(D)), int(rng.integers(L)), int(rng.integers(A))) for _ in range(args.naive_cells)]
    naive_tasks = [(str(out / "b_naive" / f"cell_{i}"), d, l, a_) for i, (d, l, a_) in enumerate(picks)]
    load_b0 = load()
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers) as pool:
        n_naive = sum(pool.imap_unordered(_naive_task, naive_tasks))
    t_naive_sample = time.perf_counter() - t0
    t_naive = t_naive_sample * cells / args.naive_cells
    print(f"(b) naive matplotlib: {n_naive} files in {t_naive_sample:.2f} s -> {t_naive:.0f} s per call "
          f"(extrapolated) [{load_b0} -> {load()}]")

    # Per-cell costs in this process, min of several short repeats: far less sensitive to other jobs than the
    # whole-call figures above.
    import simplejpeg

    from pi0viz.render.files import write_atomic

    comp_dir = out / "components"
    comp_dir.mkdir()
    cells_sample = [(d, l, a_) for d in range(2) for l in range(L) for a_ in range(0, A, 10)]
    enc_panels = [[np.ascontiguousarray(p.view(np.uint8).reshape(*p.shape, 4)) for p in job.panels(*c)]
                  for c in cells_sample[:20]]

    def best(fn, repeats: int = 5) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_paint = best(lambda: [job.panels(*c) for c in cells_sample]) / len(cells_sample)
    t_enc = best(lambda: [simplejpeg.encode_jpeg(p, quality=args.quality, colorspace="RGBX", colorsubsampling="420")
                          for ps in enc_panels for p in ps]) / len(enc_panels)
    blobs = [simplejpeg.encode_jpeg(p, quality=args.quality, colorspace="RGBX", colorsubsampling="420")
             for p in enc_panels[0]]
    counter = iter(range(10**9))

    def write_cells(atomic: bool) -> None:
        for _ in range(50):
            folder = comp_dir / str(next(counter))
            folder.mkdir()
            for blob, name in zip(blobs, names):
                if atomic:
                    write_atomic(str(folder / name), blob)
                else:
                    with open(folder / name, "wb") as f:
                        f.write(blob)

    t_plain = best(lambda: write_cells(False)) / 50
    t_atomic_w = best(lambda: write_cells(True)) / 50

    # Sizes
    content, allocated = tree_size(out / "a_pi0viz_0")
    fused16 = _NAIVE["fused"].astype(np.float16)
    np.savez(out / "fused_float16.npz", fused=fused16)
    np.savez_compressed(out / "fused_float16_z.npz", fused=fused16)
    quality_sizes = []
    for q in (70, 85, 95):
        import simplejpeg

        per_cell = sum(len(simplejpeg.encode_jpeg(p, quality=q, colorspace="RGBX", colorsubsampling="420"))
                       for s in samples for p in s) / len(samples)
        quality_sizes.append(f"q{q} ~{per_cell * cells / 1e6:.0f} MB")

    print("\nresults")
    print(f"  a/c = {t_a / t_floor:.2f} (min/min), {np.median(renders) / np.median(floors):.2f} (median/median)  "
          f"(target <= 1.5; rounds: a {', '.join(f'{x:.1f}' for x in renders)} s; "
          f"c {', '.join(f'{x:.1f}' for x in floors)} s)")
    print(f"  a/c in CPU seconds (what the call costs the machine; robust to sharing it): "
          f"{np.median(render_cpu) / np.median(floor_cpu):.2f} (median/median; a {', '.join(f'{x:.1f}' for x in render_cpu)}"
          f" s, c {', '.join(f'{x:.1f}' for x in floor_cpu)} s, c+ {', '.join(f'{x:.1f}' for x in atomic_floor_cpu)} s)")
    print(f"  c+/c = {t_atomic / t_floor:.2f} (min/min)  (the floor with pi0viz's atomic writes; rounds: c+ "
          f"{', '.join(f'{x:.1f}' for x in atomic_floors)} s)")
    implied = (t_paint + t_enc + t_atomic_w) / (t_enc + t_plain)
    print(f"  per cell, one process, min of 5 repeats: paint {t_paint * 1e3:.3f} ms, encode {t_enc * 1e3:.3f} ms, "
          f"write {t_plain * 1e3:.3f} ms plain / {t_atomic_w * 1e3:.3f} ms atomic -> implied a/c = {implied:.2f}")
    print(f"  b/a = {t_naive / t_a:.0f}  (target >= 60; naive {t_naive:.0f} s vs {t_a:.2f} s)")
    peak = max(a["maxrss_parent_mb"], a["maxrss_child_mb"])
    print(f"  peak memory {peak:.0f} MB per process (parent {a['maxrss_parent_mb']:.0f} MB; target <= 1536 MB)")
    print(f"  disk per call: {content / 1e6:.0f} MB of JPEG ({allocated / 1e6:.0f} MB allocated) at quality "
          f"{args.quality}; by quality: {', '.join(quality_sizes)}")
    print(f"  fused maps as float16 {list(fused16.shape)}: {os.path.getsize(out / 'fused_float16.npz') / 2**20:.1f} MiB "
          f"(.npz), {os.path.getsize(out / 'fused_float16_z.npz') / 2**20:.1f} MiB compressed")
    print(f"  {load()} (the machine may be shared: compare ratios, not seconds)")


if __name__ == "__main__":
    main()
