"""Viewer benchmark: a full pi0 inference call in headless Chromium, against the JPEG-tree alternative.

    python benchmarks/viewer_bench.py            # ~1-2 min on 2 cores; prints a table and ratios

Measures, in one run:
- page: write time, HTML size, side-data size (per-head maps), time until the page is ready (data decoded and
  the first cell drawn), first contentful paint, time per slider step (recolor + draw + canvas flush), the
  first switch to a single head (loads one side file) and later head/step changes;
- single-file alternative: the same page with the per-head maps embedded (--heads embed);
- JPEG alternative: the same page browsing an attention_viz tree rendered by pi0viz.render (step 0 only, all
  tokens and layers; the size of the full tree is extrapolated), time per slider step = until the 4 new JPEGs
  are decoded.
Timings are wall-clock on a shared machine: noisy; medians of several runs are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

STEP_JS = """async ([n, withHead]) => {
  const tok = document.getElementById('s-token'), lay = document.getElementById('s-layer');
  const cams = Array.from(document.querySelectorAll('canvas[data-camera]'));
  const imgs = Array.from(document.querySelectorAll('#tree-files img'));
  const A = Number(tok.max) + 1, L = Number(lay.max) + 1;
  const times = [];
  for (let k = 1; k <= n; k++) {
    const t0 = performance.now();
    tok.value = k % A; tok.dispatchEvent(new Event('input'));
    if (k % A === 0) { lay.value = (Number(lay.value) + 1) % L; lay.dispatchEvent(new Event('input')); }
    for (const c of cams) c.getContext('2d').getImageData(0, 0, 1, 1);  // force the canvas to rasterize
    if (imgs.length) await Promise.all(imgs.map((i) => i.decode().catch(() => null)));
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return [times[Math.floor(n / 2)], times[Math.floor(n * 0.95)]];
}"""


def open_page(browser, url: str) -> tuple[object, dict[str, float]]:
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    t0 = time.perf_counter()
    page.goto(url)
    while not page.evaluate("document.documentElement.dataset.ready === '1'"):
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    info = page.evaluate("""() => ({ready: window.pi0vizReadyAt,
        fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || NaN})""")
    return page, {"wall_s": wall, "ready_ms": info["ready"], "fcp_ms": info["fcp"]}


def wait_status_clear(page) -> None:
    while page.evaluate("document.getElementById('status').textContent !== ''"):
        time.sleep(0.002)


def measure_page(browser, url: str, runs: int) -> dict[str, float]:
    opens = []
    for _ in range(runs):
        page, info = open_page(browser, url)
        opens.append(info)
        page.close()
    page, _ = open_page(browser, url)
    step_med, step_p95 = page.evaluate(STEP_JS, [300, False])
    out = {k: statistics.median(o[k] for o in opens) for k in opens[0]}
    out.update(step_ms=step_med, step_p95_ms=step_p95)
    if page.evaluate("(pi0viz.meta.calls || []).length > 0 && !document.getElementById('sel-head').disabled"):
        t0 = time.perf_counter()
        page.select_option("#sel-head", "3")
        wait_status_clear(page)
        out["first_head_s"] = time.perf_counter() - t0
        head_med, _ = page.evaluate(STEP_JS, [200, True])
        out["head_step_ms"] = head_med
        t0 = time.perf_counter()
        page.keyboard.press("]")  # next diffusion step: another side file
        wait_status_clear(page)
        out["next_step_heads_s"] = time.perf_counter() - t0
    page.close()
    return out


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="page opens per variant (median)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from pi0viz.core.synthetic import place_hot_key, synthetic_bundle
    from pi0viz.render import RenderOptions, render_bundle
    from pi0viz.viewer import write_viewer

    work = Path(tempfile.mkdtemp(prefix="pi0viz_viewer_bench_"))
    bundle = synthetic_bundle()  # full pi0 call: [10, 18, 1, 1, 8, 51, 867]
    place_hot_key(bundle, step=3, layer=5, action_token=17, head=6, key=4 * 16 + 11, mass=0.9)
    print(f"bundle: attention {list(bundle.attention.shape)} {bundle.attention.dtype}; work dir {work}")

    t0 = time.perf_counter()
    side = write_viewer([bundle], work / "side.html", heads="side")
    write_side_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    embed = write_viewer([bundle], work / "embed.html", heads="embed")
    write_embed_s = time.perf_counter() - t0

    A, L, C = bundle.layout.num_action_tokens, bundle.attention.shape[1], len(bundle.camera_names)
    t0 = time.perf_counter()
    render_bundle(bundle, work / "attention_viz", RenderOptions(steps=[0]))
    render_s = time.perf_counter() - t0
    tree_bytes = dir_size(work / "attention_viz")
    tree_files = sum(1 for f in (work / "attention_viz").rglob("*.jpg"))
    cells = bundle.attention.shape[0] * A * L
    tree_full_bytes = tree_bytes * bundle.attention.shape[0]
    tree_full_files = cells * (C + 1)
    tree_page = write_viewer([], work / "tree.html", tree=work / "attention_viz")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        res_side = measure_page(browser, side.as_uri(), args.runs)
        res_embed = measure_page(browser, embed.as_uri(), args.runs)
        res_tree = measure_page(browser, tree_page.as_uri(), args.runs)
        browser.close()

    mib = 2 ** 20
    side_data = dir_size(work / "side_data")
    print(f"\nwrite_viewer: side {write_side_s:.2f} s, embed {write_embed_s:.2f} s; "
          f"pi0viz.render of step 0 ({tree_files} files): {render_s:.1f} s")
    print("open s: goto -> ready, wall clock from Python; ready ms: performance.now() at ready (from navigation);\n"
          "FCP: first contentful paint; step: one slider step incl. canvas rasterization (JPEG: until decoded)")
    heads = ("variant", "page MiB", "side MiB", "open s", "ready ms", "FCP ms", "step ms", "p95 ms")
    print("".join(f"{h:>{w}}" if w > 0 else f"{h:<{-w}}" for h, w in zip(heads, (-34, 9, 9, 8, 9, 8, 8, 8))))
    rows = [("uint8 page, heads side (default)", side.stat().st_size, side_data, res_side),
            ("uint8 page, heads embedded", embed.stat().st_size, 0, res_embed),
            ("JPEG tree page (step 0 tree)", tree_page.stat().st_size, tree_bytes, res_tree)]
    for name, size, extra, r in rows:
        print(f"{name:<34}{size / mib:>9.1f}{extra / mib:>9.1f}{r['wall_s']:>8.2f}{r['ready_ms']:>9.0f}"
              f"{r['fcp_ms']:>8.0f}{r['step_ms']:>8.2f}{r['step_p95_ms']:>8.2f}")
    print(f"\nheads side: first head view {res_side['first_head_s']:.2f} s (one {side_data / 10 / mib:.1f} MiB side "
          f"file), next diffusion step with heads {res_side['next_step_heads_s']:.2f} s, "
          f"head scrubbing {res_side['head_step_ms']:.2f} ms/step")
    print(f"full JPEG tree (extrapolated): {tree_full_files} files, {tree_full_bytes / mib:.0f} MiB, "
          f"~{render_s * bundle.attention.shape[0]:.0f} s to render")
    page_total = side.stat().st_size
    print("\nratios")
    print(f"  JPEG tree / uint8 page, bytes on disk:      {tree_full_bytes / page_total:7.1f}x")
    print(f"  JPEG step / uint8 step, time per slider step: {res_tree['step_ms'] / res_side['step_ms']:7.1f}x")
    print(f"  heads embedded / heads side, page bytes:    {embed.stat().st_size / page_total:7.1f}x")
    print(f"  heads embedded / heads side, time to ready: {res_embed['ready_ms'] / res_side['ready_ms']:7.1f}x")
    print(f"  full-tree render / write_viewer, seconds:   {render_s * bundle.attention.shape[0] / write_side_s:7.1f}x")


if __name__ == "__main__":
    main()
