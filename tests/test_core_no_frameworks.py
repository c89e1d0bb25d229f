"""The house: the numpy core runs without any model framework, and renderer and viewer share one fusion pass."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
from bundle_support import small

from pi0viz.core.synthetic import place_hot_key
from pi0viz.render.engine import RenderJob, RenderOptions
from pi0viz.viewer.data import call_arrays


def test_core_render_viewer_and_protocol_run_with_jax_and_torch_unimportable(tmp_path):
    # sys.modules[name] = None makes `import name` raise ImportError: as if jax/torch/... were not installed.
    script = textwrap.dedent(f"""
        import sys
        for name in ("jax", "jaxlib", "orbax", "orbax.checkpoint", "sentencepiece", "torch", "flax"):
            sys.modules[name] = None
        import pi0viz
        from pi0viz import CaptureBundle, load_bundle, render_bundle, RenderOptions, save_bundle, write_viewer
        from pi0viz.core.synthetic import synthetic_bundle
        from pi0viz.serving import msgpack_numpy, protocol
        b = synthetic_bundle(num_steps=1, num_layers=2, num_action_tokens=2)
        path = save_bundle(b, r"{tmp_path}/call.npz")
        s = render_bundle(load_bundle(path), r"{tmp_path}/tree", RenderOptions(workers=1))
        write_viewer([path], r"{tmp_path}/page.html")
        again = protocol.bundle_from_response(msgpack_numpy.unpackb(msgpack_numpy.packb(protocol.bundle_to_response(b))))
        assert abs(again.attention.astype("float32") - b.attention).max() < 1e-3  # float16 on the wire
        loaded = sorted(m for m, mod in sys.modules.items()
                        if mod is not None and m.split(".")[0] in ("jax", "torch", "sentencepiece", "orbax"))
        print(s.files_written, loaded)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    files, loaded = out.stdout.split(maxsplit=1)
    assert int(files) == 1 * 2 * 2 * 4 and (tmp_path / "page.html").stat().st_size > 0
    assert loaded.strip() == "[]"


def test_renderer_captions_and_viewer_read_the_same_fusion_numbers():
    b = small(image_masks=(True, True, False))
    hot = b.layout.camera_region(1).start + 37
    place_hot_key(b, step=1, layer=2, action_token=3, head=5, key=hot, mass=0.8)
    job = RenderJob(b, "unused", 0, RenderOptions(workers=1))
    view = call_arrays(b)
    H = b.attention.shape[3] * b.attention.shape[4]
    names = [r.name for r in b.layout.regions()]
    for n, (name, _, _) in enumerate(job.regions):  # drawn regions: base, left wrist, text
        m = names.index(name) if name != "text" else names.index(b.layout.text_region.name)
        viewer_mass = view.mass[:, :, :, H, m] / 65535.0  # [D, L, A], mean over heads
        np.testing.assert_allclose(job.mass[..., n], viewer_mass, atol=1 / 65535)
    # The caption's peak of the hottest region is the viewer's cell maximum, to float32 precision.
    np.testing.assert_allclose(job.peaks.max(axis=-1), view.cell_max, rtol=1e-6)
    assert job.peaks[1, 2, 3, 1] >= 0.8 and np.isclose(view.cell_max[1, 2, 3], job.peaks[1, 2, 3, 1])


def test_usage_errors_are_one_line_with_exit_1():
    from click.testing import CliRunner

    from pi0viz.cli import main

    for args, expect in ((["render", "--zoom", "99", "x.npz"], "pi0viz render: error: Invalid value for '--zoom'"),
                         (["bogus"], "pi0viz: error: No such command 'bogus'")):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and result.stderr.startswith(expect), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
