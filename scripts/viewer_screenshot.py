"""Make docs/images/viewer.png: the viewer over `pi0viz demo` bundles (untrained tiny pi0 on shipped LIBERO frames).

    python scripts/viewer_screenshot.py [--demo-dir /tmp/pi0viz_shot]   # ~1-2 min on CPU (runs the demo once)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo-dir", type=Path, default=Path("/tmp/pi0viz_shot"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/viewer.png")
    ap.add_argument("--state", default="call=1&d=9&a=0&l=2&alpha=0.65", help="viewer URL hash to show")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from pi0viz.demo import run_demo
    from pi0viz.viewer import write_viewer

    bundles = sorted((args.demo_dir / "bundles").glob("*.npz"))
    if len(bundles) < 4:  # four calls: one shipped scene of each LIBERO suite; render one cell only
        run_demo(args.demo_dir, calls=4, steps="0", action_tokens="0", layers="0", workers=1, viewer=False)
        bundles = sorted((args.demo_dir / "bundles").glob("*.npz"))
    page = write_viewer(bundles, args.demo_dir / "viewer.html", title="pi0viz viewer: pi0viz demo (untrained tiny pi0)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        tab = browser.new_page(viewport={"width": 1500, "height": 900}, device_scale_factor=1)
        tab.goto(page.as_uri() + "#" + args.state)
        while not tab.evaluate("document.documentElement.dataset.ready === '1'"):
            time.sleep(0.01)
        tab.wait_for_timeout(300)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
