"""`pi0viz report RUN_DIR`: one offline HTML page over a run's metrics, with matplotlib plots.

Reads every episode_metrics.json under RUN_DIR (written by `pi0viz metrics` or the LIBERO example's
--grounding; a `pi0viz sweep` folder's episodes without one come from their records) and writes
RUN_DIR/report.html (plots embedded as PNG data URIs; no script, no network: the page's Content-Security-Policy
allows nothing but inline styles and images) plus RUN_DIR/run_metrics.json (the aggregates per task and by
outcome). Every knockout.json under RUN_DIR (`pi0viz knockout`, docs/causal.md) adds a section: its maps ranked by
the deletion gap and its knockout.png; a folder with only knockouts gets a page with only them. All text from data
is HTML-escaped; links are relative and URL-quoted.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from pi0viz.analysis import grounding as G
from pi0viz.analysis.metrics import DECODING, EPISODE_METRICS, METRICS_FORMAT
from pi0viz.core.jsonfile import read_json
from pi0viz.core.knockout_files import (  # noqa: F401  (the formats: imported from here by tests)
    KNOCKOUT_FORMAT, KNOCKOUT_JSON, STUDY_FORMAT, STUDY_JSON, png_data_url, read_knockout_result)
from pi0viz.core.writes import replace_together
from pi0viz.errors import AnalysisError, BundleError, JsonFileError

OUTCOME_COLORS = {True: "#1a9850", False: "#d73027", None: "#777777"}
MAX_EPISODE_SECTIONS = 50  # beyond this the page lists episodes without per-episode plots


def load_run(run_dir: Path, unusable: list[str] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(episode folder, episode metrics) for every usable episode under run_dir, sorted by path.

    An episode whose metrics are damaged, empty or of the wrong types is left out; its one-line reason is appended
    to `unusable` when given. AnalysisError when no episode is usable.

    The episodes are found by pi0viz.core.runs (episode, run and sweep folders alike): each episode_metrics.json
    (written by `pi0viz metrics` or the LIBERO example's --grounding); for a sweep's episode without one, its
    record (episodes/<key>.npz) gives the outcome and the region masses (the "folder" is then the record file).
    """
    from pi0viz.core.runs import RunError, read_run

    try:
        episodes = read_run([run_dir], allow_empty=True).episodes
    except RunError:  # e.g. a damaged bundle folder: the metrics files below are still readable
        episodes = []
    found: dict[Path, tuple[Path, Path]] = {}
    for ep in episodes:
        if ep.metrics is not None:
            found[ep.metrics.resolve()] = (ep.root, ep.metrics)
    for f in run_dir.rglob(EPISODE_METRICS):  # also metrics files deeper than the reader looks
        found.setdefault(f.resolve(), (f.parent.parent if f.parent.name == "bundles" else f.parent, f))
    out: list[tuple[Path, dict[str, Any]]] = []
    skipped: list[str] = []
    # One damaged or empty episode (e.g. `{"calls": []}` from an episode whose first call failed) is left out with
    # one line saying why; the rest of the run is still reported.
    readers = [(folder, f, _read_metrics) for folder, f in sorted(found.values())]
    readers += sorted((ep.record, ep.record, episode_from_record) for ep in episodes
                      if ep.record is not None and ep.metrics is None)
    for folder, f, read in readers:
        try:
            data = read(f)
            problem = _metrics_problem(data)  # a sweep record's masses are checked like a metrics file's
            if problem:
                raise AnalysisError(f"{f}: unusable episode: {problem}")
            out.append((folder, data))
        except (AnalysisError, BundleError) as err:
            skipped.append(str(err))
    if unusable is not None:
        unusable.extend(skipped)
    if not out:
        if skipped:
            raise AnalysisError(f"no usable episode under {run_dir}: {len(skipped)} unusable, the first: {skipped[0]}")
        raise AnalysisError(f"no {EPISODE_METRICS} under {run_dir}: run `pi0viz metrics BUNDLES` (or the LIBERO "
                            "example with --grounding) first, or point at a `pi0viz sweep` folder")
    return out


MAX_METRICS_BYTES = 256 << 20  # an episode's metrics are kilobytes to a few MB; more is not a metrics file
MAX_RESULTS_BYTES = 64 << 20  # a sweep's results.json: kilobytes per task and object
MAX_METRIC_VALUE = 1e12  # masses and shares are fractions, IoUs and lifts small numbers: beyond this is damage


def _read_metrics(f: Path) -> dict[str, Any]:
    """An episode_metrics.json, checked for everything the report reads; AnalysisError (one line naming the file
    and what was wrong) if it cannot be used."""
    try:
        data = read_json(f, max_bytes=MAX_METRICS_BYTES)
    except JsonFileError as err:
        raise AnalysisError(f"{f}: unusable episode metrics: {err.reason}") from None
    problem = _metrics_problem(data)
    if problem:
        raise AnalysisError(f"{f}: unusable episode metrics: {problem}")
    return data


def _number_problem(value: Any, where: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{where} is {type(value).__name__}, expected a number"
    if not abs(value) <= MAX_METRIC_VALUE:  # also catches huge ints and (already refused) NaN
        return f"{where} is {value!r:.40}, expected a finite number of at most {MAX_METRIC_VALUE:g}"
    return None


def _array_problem(value: Any, where: str, ndim: int) -> str | None:
    """None if value is a regular nested list of finite, bounded numbers with `ndim` dimensions."""
    def walk(v: Any, depth: int) -> str | None:
        if depth == ndim:
            return _number_problem(v, where, optional=False)
        if not isinstance(v, list):
            return f"{where} is not a {ndim}-d list of numbers"
        for item in v:
            if (bad := walk(item, depth + 1)) is not None:
                return bad
        return None

    if (bad := walk(value, 0)) is not None:
        return bad
    try:
        shape = np.asarray(value, np.float64).shape
    except (ValueError, OverflowError):
        return f"{where} is ragged (rows of different lengths)"
    if len(shape) != ndim or 0 in shape:
        return f"{where} is ragged or empty"
    return None


def _means_problem(block: Any, where: str) -> str | None:
    """A grounding summary: {"cameras": {name: {"mean": {metric: number|null}}}, "prefix": {"mean": {...}}}."""
    if block is None:
        return None
    if not isinstance(block, dict) or not isinstance(block.get("cameras"), dict) or \
            not isinstance(block.get("prefix"), dict):
        return f"{where} is not a grounding summary (cameras, prefix)"
    parts = [(f"{where}.prefix", block["prefix"])] + [(f"{where}.cameras.{n}", b) for n, b in block["cameras"].items()]
    for name, part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("mean"), dict):
            return f"{name} has no 'mean' metrics"
        for k, v in part["mean"].items():
            if (bad := _number_problem(v, f"{name}.mean.{k}")) is not None:
                return bad
    return None


def _metrics_problem(data: Any) -> str | None:
    """What makes an episode metrics dict unusable for the report, or None when every field it reads is sound."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, expected an object with 'calls' (format {METRICS_FORMAT!r})"
    calls = data.get("calls")
    if not isinstance(calls, list):
        return "no 'calls' list"
    if not calls:
        return "no inference calls (did its first call fail?)"
    info = data.get("episode", {})
    if not isinstance(info, dict):
        return "'episode' is not an object"
    if info.get("success") is not None and not isinstance(info["success"], bool):
        return "episode.success is not true, false or null"
    for i, c in enumerate(calls):
        where = f"calls[{i}]"
        if not isinstance(c, dict):
            return f"{where} is not an object"
        if c.get("call") is not None and (isinstance(c["call"], bool) or not isinstance(c["call"], int)
                                          or not 0 <= c["call"] < 2**31):
            return f"{where}.call is {c['call']!r:.40}, expected a non-negative integer"
        if not isinstance(c.get("prompt", ""), str):
            return f"{where}.prompt is not text"
        regions = c.get("regions")
        if not isinstance(regions, dict) or not isinstance(regions.get("names"), list) or \
                not all(isinstance(n, str) for n in regions["names"]) or not regions["names"]:
            return f"{where}.regions has no list of region names"
        if (bad := _array_problem(regions.get("mass"), f"{where}.regions.mass", 3)) is not None:
            return bad
        if len(regions["mass"]) != len(regions["names"]):
            return f"{where}.regions.mass has {len(regions['mass'])} regions for {len(regions['names'])} names"
        if c.get("sink_share") and (bad := _array_problem(c["sink_share"], f"{where}.sink_share", 2)) is not None:
            return bad
        keys = c.get("sink_keys", [])
        if not isinstance(keys, list):
            return f"{where}.sink_keys is not a list"
        for k in keys:
            if not isinstance(k, dict) or not isinstance(k.get("region"), str) or \
                    not all(isinstance(k.get(n), (str, int, type(None))) for n in ("piece", "token", "index")) or \
                    not all(isinstance(x, int) for x in k.get("patch", [])) or \
                    isinstance(k.get("cells"), bool) or not isinstance(k.get("cells"), int) or \
                    _number_problem(k.get("mean_share"), "", optional=False) is not None or \
                    not isinstance(k.get("patch", []), list):
                return f"{where}.sink_keys holds an entry without region, cells (integer) and mean_share (number)"
        if (bad := _means_problem(c.get("grounding"), f"{where}.grounding")) is not None:
            return bad
    return _means_problem(data.get("grounding"), "grounding")


def episode_from_record(record: Path) -> dict[str, Any]:
    """A sweep's episode record as an episode metrics dict: the outcome, and per call the head-mean mass of each
    drawn region (cameras, then the prompt) averaged over the action tokens. No sinks; its grounding scalars are
    in the sweep's results.md."""
    from pi0viz.analysis.metrics import record_info
    from pi0viz.core.runs import load_members

    arrays = load_members(record, ["region_mass", "region_names", "meta"])
    if "region_mass" not in arrays and "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except ValueError:
            meta = {}
        if isinstance(meta, dict) and meta.get("calls") == 0 and meta.get("scripted_chunks"):
            raise AnalysisError(f"{record}: a scripted baseline's episode (no policy call, no attention)")
    if "region_mass" not in arrays or "region_names" not in arrays or arrays["region_mass"].ndim != 5:
        raise AnalysisError(f"{record}: not a pi0viz sweep episode record (region_mass [calls, D, L, A, M])")
    info = record_info(record)
    names = [str(n) for n in arrays["region_names"]]
    mass = arrays["region_mass"].astype(np.float64).mean(axis=3)  # [calls, D, L, M]
    calls = [{"call": i, "source": record.name, "prompt": info.get("prompt", ""),
              "regions": {"names": names, "kinds": ["text" if n == "text" else "camera" for n in names],
                          "mass": np.round(m.transpose(2, 0, 1), 6).tolist()},
              "sink_share": None, "sink_keys": [], "grounding": None} for i, m in enumerate(mass)]
    return {"format": METRICS_FORMAT, "episode": info, "calls": calls, "grounding": None}


def _outcome(ep: dict[str, Any]) -> bool | None:
    value = ep.get("episode", {}).get("success")
    return bool(value) if isinstance(value, bool) else None


def _task(ep: dict[str, Any]) -> str:
    info = ep.get("episode", {})
    if "suite" in info and "task_id" in info:
        return f"{info['suite']} task {info['task_id']}"
    calls = ep.get("calls") or [{}]
    return str(info.get("prompt") or calls[0].get("prompt") or "unknown task")


def aggregate_run(episodes: Sequence[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Grounding means per task and per outcome (episodes weighted equally)."""
    def agg(selected: list[dict[str, Any]]) -> dict[str, Any]:
        summaries = [ep["grounding"] for ep in selected if ep.get("grounding")]
        means = [{"cameras": s["cameras"], "prefix": s["prefix"]} for s in summaries]
        out = G.aggregate(means) if means else {"count": 0, "cameras": {}, "prefix": {"mean": {}}}
        out["episodes"] = len(selected)
        out["successes"] = sum(1 for ep in selected if _outcome(ep) is True)
        return out

    eps = [ep for _, ep in episodes]
    tasks: dict[str, list[dict[str, Any]]] = {}
    for ep in eps:
        tasks.setdefault(_task(ep), []).append(ep)
    return {
        "all": agg(eps),
        "success": agg([ep for ep in eps if _outcome(ep) is True]),
        "failure": agg([ep for ep in eps if _outcome(ep) is False]),
        "tasks": {name: agg(items) for name, items in sorted(tasks.items())},
    }


# -- plots -------------------------------------------------------------------------------------------------


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def _decoding(call: dict[str, Any]) -> bool:
    """True for a pi0-FAST call's metrics (its steps are decode steps), False for a denoising call's."""
    return call.get("call_kind") == DECODING


def _pad_steps(arrays: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Stack arrays that differ only in their step axis `axis`, padding the shorter ones with NaN: decoding calls
    stop at their end-of-sequence token, so decode step j is averaged over the calls that reached it."""
    n = max(a.shape[axis] for a in arrays)
    out = []
    for a in arrays:
        pad = [(0, 0)] * a.ndim
        pad[axis] = (0, n - a.shape[axis])
        out.append(np.pad(a, pad, constant_values=np.nan))
    return np.stack(out)


def _region_curves(calls: Sequence[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """names, mass [M, D, L] (key regions) averaged over the calls (decoding calls: [M, J, L], decode step j over
    the calls that reached it)."""
    names = calls[0]["regions"]["names"]
    shape = np.shape(calls[0]["regions"]["mass"])
    if _decoding(calls[0]):
        same = [np.asarray(c["regions"]["mass"], np.float64) for c in calls if _decoding(c)
                and c["regions"]["names"] == names and np.shape(c["regions"]["mass"])[::2] == shape[::2]]
        return names, np.nanmean(_pad_steps(same, 1), axis=0)
    # episodes of other models (other regions, steps or layers) cannot be averaged with the first call's
    stack = np.asarray([c["regions"]["mass"] for c in calls if not _decoding(c)
                        and c["regions"]["names"] == names and np.shape(c["regions"]["mass"]) == shape], np.float64)
    return names, stack.mean(axis=0)


def _step_axis(calls: Sequence[dict[str, Any]]) -> str:
    """The step axis' label: decode steps for pi0-FAST calls, denoising steps otherwise (of the first call's kind,
    the kind every plot of these calls shows)."""
    return "decode step (0 = the token picked from the prefill)" if calls and _decoding(calls[0]) \
        else "denoising step (0 = t 1.0, noise)"


def _rows_words(calls: Sequence[dict[str, Any]]) -> str:
    """What one metric row is, in the report's words: the action tokens' rows, or each decode step's query."""
    kinds = {_decoding(c) for c in calls}
    if kinds == {True}:
        return "every decode step's query (the generated token) and layer"
    if kinds == {True, False}:
        return ("every action token, denoising step and layer (pi0, pi0.5) and every decode step's query and layer "
                "(pi0-FAST; the plots show the first call's kind)")
    return "every action token, step and layer"


def plot_region_mass(calls: Sequence[dict[str, Any]], title: str) -> str:
    plt = _pyplot()
    names, mass = _region_curves(calls)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for name, m in zip(names, mass):
        axes[0].plot(m.mean(axis=0), marker=".", label=name)  # over layers
        axes[1].plot(m.mean(axis=1), marker=".", label=name)  # over steps
    axes[0].set(xlabel="layer", ylabel="attention mass (head mean)", title="per layer")
    axes[1].set(xlabel=_step_axis(calls), title="per step")
    axes[0].legend(fontsize=7)
    image = axes[2].imshow(mass.mean(axis=1), aspect="auto", cmap="inferno")  # [M, L]
    axes[2].set(xlabel="layer", title="region x layer")
    axes[2].set_yticks(np.arange(len(names)), names, fontsize=7)
    fig.colorbar(image, ax=axes[2])
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers and steps are whole numbers
    fig.suptitle(title, y=1.04)
    return _png(fig)


def _call_series(ep: dict[str, Any], camera: str | None, metric: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for c in ep["calls"]:
        g = c.get("grounding")
        if not g:
            continue
        block = g["prefix"] if camera is None else g["cameras"].get(camera)
        value = block["mean"].get(metric) if block else None
        if value is not None:
            xs.append(c["call"])
            ys.append(value)
    return xs, ys


def plot_grounding_over_episodes(episodes: Sequence[dict[str, Any]], camera: str | None) -> str | None:
    """Object share of the prefix and the first camera's top-10 % IoU over each episode's calls, by outcome."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = [(None, "object_share", "object share of the prefix attention")]
    if camera:
        panels += [(camera, "iou10", f"{camera}: IoU of the top 10 %"), (camera, "lift", f"{camera}: lift")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.2), squeeze=False)
    drawn = False
    for ax, (cam, metric, label) in zip(axes[0], panels):
        for ep in episodes:
            xs, ys = _call_series(ep, cam, metric)
            if xs:
                ax.plot(xs, ys, marker=".", color=OUTCOME_COLORS[_outcome(ep)], alpha=0.8)
                drawn = True
        ax.set(xlabel="inference call", title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].plot([], [], color=OUTCOME_COLORS[True], label="success")
    axes[0][0].plot([], [], color=OUTCOME_COLORS[False], label="failure")
    axes[0][0].legend(fontsize=7)
    if not drawn:
        plt.close(fig)  # an empty figure kept open would pile up, one per episode section
        return None
    return _png(fig)


def plot_outcomes(run: dict[str, Any], camera: str | None) -> str | None:
    plt = _pyplot()
    metrics = [("prefix", "object_share"), ("prefix", "text_share")]
    if camera:
        metrics += [(camera, m) for m in ("mass_in_camera", "iou10", "iou25", "pointing_hit")]
    groups = [("success", run["success"]), ("failure", run["failure"])]
    if not any(g["count"] for _, g in groups):
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2))
    width = 0.38
    for i, (name, g) in enumerate(groups):
        vals = []
        for where, m in metrics:
            block = g["prefix"] if where == "prefix" else g["cameras"].get(where, {})
            v = block.get("mean", {}).get(m) if block else None
            vals.append(np.nan if v is None else v)
        ax.bar(np.arange(len(metrics)) + (i - 0.5) * width, vals, width, label=f"{name} ({g['episodes']})",
               color=OUTCOME_COLORS[name == "success"])
    ax.set_xticks(np.arange(len(metrics)), [f"{w}\n{m}" if w != "prefix" else m for w, m in metrics], fontsize=7)
    ax.legend(fontsize=7)
    ax.set_title("episode means by outcome")
    return _png(fig)


def plot_sinks(calls: Sequence[dict[str, Any]]) -> str | None:
    plt = _pyplot()
    decoding = bool(calls) and _decoding(calls[0])  # the plot shows the first call's kind of step
    shares = [np.asarray(c["sink_share"], np.float64) for c in calls if c.get("sink_share") and
              _decoding(c) == decoding]
    if decoding and shares and len({s.shape[1:] for s in shares}) == 1:  # [J, L], J up to each call's end token
        mean = np.nanmean(_pad_steps(shares, 0), axis=0)
    elif not shares or len({s.shape for s in shares}) != 1:
        return None
    else:
        mean = np.mean(shares, axis=0)  # [D, L]
    fig, ax = plt.subplots(figsize=(6, 3))
    image = ax.imshow(mean, aspect="auto", cmap="inferno", vmin=0, vmax=max(float(mean.max()), 1e-6))
    ax.set(xlabel="layer (position)", ylabel=f"{'decode step' if decoding else 'step'} (position)",
           title="attention mass on sink keys")
    fig.colorbar(image, ax=ax)
    return _png(fig)


# -- page ------------------------------------------------------------------------------------------------

_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%;display:block;margin:6px 0}
.ok{color:#1a9850;font-weight:600}.bad{color:#d73027;font-weight:600}section{border-top:1px solid #ddd;margin-top:18px}
.muted{color:#777}"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    return "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else _e(value))


def _link(target: Path, page_dir: Path, label: str) -> str:
    rel = os.path.relpath(target.resolve(), page_dir.resolve())
    return f'<a href="{_e(quote(Path(rel).as_posix()))}">{_e(label)}</a>'


def _img(data: str | None, alt: str) -> str:
    return f'<img src="{data}" alt="{_e(alt)}">' if data else f'<p class="muted">{_e(alt)}: no data</p>'


def _outcome_html(ep: dict[str, Any]) -> str:
    o = _outcome(ep)
    return {True: '<span class="ok">success</span>', False: '<span class="bad">failure</span>'}.get(
        o, '<span class="muted">unknown</span>')


def _first_camera(episodes: Sequence[dict[str, Any]]) -> str | None:
    for ep in episodes:
        for c in ep["calls"]:
            if c.get("grounding") and c["grounding"]["cameras"]:
                return next(iter(c["grounding"]["cameras"]))
    return None


def _task_table(run: dict[str, Any], camera: str | None) -> str:
    head = ["task", "episodes", "successes", "object share", "text share"]
    if camera:
        head += [f"{camera} mass in camera", f"{camera} lift", f"{camera} IoU 10 %", f"{camera} pointing"]
    rows = []
    for name, g in [("all episodes", run["all"]), ("successes", run["success"]), ("failures", run["failure"])] + \
            list(run["tasks"].items()):
        cam = g["cameras"].get(camera, {}).get("mean", {}) if camera else {}
        cells = [g["episodes"], g["successes"], g["prefix"]["mean"].get("object_share"),
                 g["prefix"]["mean"].get("text_share")]
        if camera:
            cells += [cam.get("mass_in_camera"), cam.get("lift"), cam.get("iou10"), cam.get("pointing_hit")]
        rows.append(f'<tr><td class="l">{_e(name)}</td>' + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f'<th class="{"l" if i == 0 else ""}">{_e(h)}</th>' for i, h in enumerate(head))
            + "</tr>" + "".join(rows) + "</table>")


def _sweep_tables(run_dir: Path) -> list[str]:
    """A `pi0viz sweep` folder's results.json: its success per named object (the reach suite) and its grounding
    metrics by outcome (sweep records keep scalars, not maps); nothing for other folders."""
    if not (run_dir / "results.json").is_file():
        return []
    try:  # a sweep writes NaN where a mean has no episodes: accepted here, drawn as nan
        res = read_json(run_dir / "results.json", max_bytes=MAX_RESULTS_BYTES, allow_nan=True)
    except JsonFileError:
        return []
    if not isinstance(res, dict):
        return []
    out = []
    objects = [r for r in res.get("objects") or [] if isinstance(r, dict)]
    if objects:
        head = ["object", "episodes", "successes", "success rate", "near at the end", "target pushed",
                "median final distance (cm)", "median target pushed (cm)"]
        rows = [[r.get("object"), r.get("episodes"), r.get("successes"), r.get("success_rate"), r.get("near_at_end"),
                 r.get("pushed"), r.get("final_distance_cm"), r.get("target_moved_cm")] for r in objects]
        out += ["<h2>Per named object (sweep)</h2>", _plain_table(head, rows)]
    grounding = res.get("grounding") if isinstance(res.get("grounding"), dict) else {}
    outcome = {}
    for label, value in grounding.items():
        group, _, metric = str(label).partition(" / ")
        if group in ("success", "failure") and metric.endswith((".lift", ".mass_in_camera", ".pointing_hit")):
            outcome.setdefault(metric, {})[group] = value
    if outcome:
        rows = [[m, v.get("success"), v.get("failure")] for m, v in sorted(outcome.items())]
        out += ["<h2>Grounding by outcome (sweep records)</h2>",
                "<p>Means over episodes of each episode's mean over its calls; in the reach suite the plain names "
                "are the named object, <code>others.</code> the other objects in view.</p>",
                _plain_table(["metric", "success", "failure"], rows)]
    return out


def _plain_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = "".join("<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">'
                                     f'{_e(str(c)) if i == 0 else _fmt(c)}</td>' for i, c in enumerate(r)) + "</tr>"
                    for r in rows)
    return ("<table><tr>" + "".join(f'<th class="{"l" if i == 0 else ""}">{_e(h)}</th>' for i, h in enumerate(head))
            + "</tr>" + cells + "</table>")


def _sink_table(calls: Sequence[dict[str, Any]]) -> str:
    counts: dict[tuple, list] = {}
    for c in calls:
        for k in c.get("sink_keys", []):
            ident = (k["region"], k.get("piece", ""), tuple(k.get("patch", ())), k.get("token", k.get("index", "")))
            counts.setdefault(ident, []).append((k["cells"], k["mean_share"]))
    if not counts:
        return '<p class="muted">no sinks found (criterion: see docs/analysis.md)</p>'
    rows = sorted(counts.items(), key=lambda kv: -sum(n for n, _ in kv[1]))[:12]
    body = "".join(
        f'<tr><td class="l">{_e(r)}</td><td class="l">{_e(p if p else (list(pt) if pt else i))}</td>'
        f"<td>{len(v)}</td><td>{sum(n for n, _ in v)}</td><td>{np.mean([s for _, s in v]):.3f}</td></tr>"
        for (r, p, pt, i), v in rows)
    return ('<table><tr><th class="l">region</th><th class="l">token / patch</th><th>calls</th>'
            "<th>(step, layer) cells</th><th>mean share</th></tr>" + body + "</table>")


MAX_KNOCKOUT_FILES = 20


def _knockout_section(f: Path, page_dir: Path, run_dir: Path) -> str:
    """One knockout result as HTML: core.knockout_files' table (knockout.json: the maps ranked by their deletion gap,
    the faithfulness number of docs/causal.md; knockouts.json: each key set's action shift against its matched random
    baseline), its figure, and links to the JSON, its CSV and, beside a knockouts.json, the prefix_attention tree. A
    file that cannot be used is one muted line."""
    t = read_knockout_result(f, run_dir)
    head = f"<h3>{_e(t.title)}</h3>"
    if t.kind == "unreadable":
        return head + "".join(f'<p class="muted">{_e(line)}</p>' for line in t.info)
    cls = [' class="l"' if i in t.text_columns else "" for i in range(len(t.header))]
    table = ("<table><tr>" + "".join(f"<th{c}>{_e(h)}</th>" for c, h in zip(cls, t.header)) + "</tr>"
             + "".join("<tr>" + "".join(f"<td{c}>{_e(v)}</td>" for c, v in zip(cls, row)) + "</tr>" for row in t.rows)
             + "</table>")
    links = [_link(f.with_name(n), page_dir, n) for n in (f.name, f.with_suffix(".csv").name)
             if f.with_name(n).is_file()]
    if t.kind == "conditions" and f.with_name("prefix_attention").is_dir():
        links.append(_link(f.with_name("prefix_attention"), page_dir, "prefix attention tree"))
    figure = png_data_url(t.figure)
    img = _img(figure, "knockouts" if t.kind == "conditions" else "knockout curves") if figure else ""
    return head + f"<p>{' · '.join([*map(_e, t.info), *links])}</p>" + table + img


def knockout_sections(run_dir: Path, page_dir: Path) -> list[str]:
    """HTML sections of the knockout.json (curves) and knockouts.json (key sets) files under run_dir (at most
    MAX_KNOCKOUT_FILES of each, by path)."""
    found = sorted(run_dir.rglob(KNOCKOUT_JSON))[:MAX_KNOCKOUT_FILES] + \
        sorted(run_dir.rglob(STUDY_JSON))[:MAX_KNOCKOUT_FILES]
    return [_knockout_section(f, page_dir, run_dir) for f in found if f.is_file()]


def write_report(run_dir: str | os.PathLike, out_html: str | os.PathLike | None = None, *,
                 on_unusable: Callable[[str], None] | None = None) -> Path:
    """Write RUN_DIR/report.html (and run_metrics.json) from the episode metrics under RUN_DIR.

    Episodes whose metrics cannot be used (empty, damaged, wrong types, NaN) are left out of the plots and listed
    on the page; each one's one-line reason is passed to `on_unusable` (the CLI prints it). AnalysisError when no
    episode is usable.
    """
    from pi0viz.core.runs import check_input_path

    run_dir = Path(run_dir)
    check_input_path(run_dir)  # a symbolic link loop is named as one, not as a missing folder
    if not run_dir.is_dir():
        raise AnalysisError(f"no run folder at {run_dir}")
    out = Path(out_html) if out_html else run_dir / "report.html"
    unusable: list[str] = []
    knockouts = knockout_sections(run_dir, out.parent)
    knockout_html = ["<h2>Knockouts: deletion and insertion curves, key sets</h2>",
                     "<p>Curves: maps ranked by their deletion gap, the area between the deletion curve in the map's "
                     "order and in random order (positive: the map removes what moves the actions sooner than "
                     "chance); mean ± standard error over examples. Key sets: the action shift when a set of keys is "
                     "removed (masked in the attention, or its patches painted with the image mean) against as many "
                     "random patches; mean ± standard error over noise draws. See docs/causal.md.</p>",
                     *knockouts] if knockouts else []
    sweep_only: list[str] = []
    try:
        episodes = load_run(run_dir, unusable)
    except AnalysisError as err:
        sweep_only = _sweep_tables(run_dir)
        if not knockouts and not sweep_only:
            raise
        episodes = []  # a knockout folder alone, or a sweep without attention: the page holds their tables
        if sweep_only:  # e.g. a scripted reach baseline: outcomes, no policy call, so no attention to draw
            sweep_only.insert(0, f"<p>No attention in this run: {_e(str(err))}. Its outcomes:</p>")
    if not episodes:
        page = ["<!doctype html><html><head><meta charset='utf-8'>",
                ("<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data: file: "
                 "'self'; style-src 'unsafe-inline'\">"),
                f"<title>pi0viz report: {_e(run_dir.name)}</title><style>{_STYLE}</style></head><body>",
                f"<h1>pi0viz report: {_e(run_dir.name)}</h1>", *sweep_only, *knockout_html, "</body></html>"]
        return replace_together([(out, "\n".join(page))])[-1]
    for line in unusable:
        if on_unusable is not None:
            on_unusable(line)
    eps = [ep for _, ep in episodes]
    run = aggregate_run(episodes)
    calls = [c for ep in eps for c in ep["calls"]]
    camera = _first_camera(eps)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        ("<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data: file: 'self'; "
         "style-src 'unsafe-inline'\">"),
        f"<title>pi0viz report: {_e(run_dir.name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>pi0viz report: {_e(run_dir.name)}</h1>",
        (f"<p>{len(eps)} episode(s), {len(calls)} inference call(s), {run['all']['successes']} success(es). "
         f"Metrics: head-mean attention of {_rows_words(calls)}; definitions in docs/analysis.md "
         "(IoU at top k % as vla-interp).</p>"),
        "<h2>Grounding per task and outcome</h2>", _task_table(run, camera), *_sweep_tables(run_dir),
        "<h2>Attention mass per region</h2>", _img(plot_region_mass(calls, "all calls"), "mass per region"),
        "<h2>Grounding over the episodes</h2>",
        _img(plot_grounding_over_episodes(eps, camera), "grounding over the episodes (needs object masks)"),
        _img(plot_outcomes(run, camera), "success vs failure"),
        "<h2>Sinks</h2>", _img(plot_sinks(calls), "sink share"), _sink_table(calls),
        *knockout_html,
        "<h2>Episodes</h2>",
    ]
    for i, (folder, ep) in enumerate(episodes):
        info = ep.get("episode", {})
        prompt = info.get("prompt") or (ep["calls"][0].get("prompt", "") if ep["calls"] else "")
        title = folder.stem if folder.is_file() else folder.name
        if folder.is_file():  # a sweep's episode record: link it and its rollout video
            links = [_link(folder, out.parent, "record (.npz)")]
            if folder.with_suffix(".mp4").is_file():
                links.append(_link(folder.with_suffix(".mp4"), out.parent, "rollout video"))
        else:
            links = [_link(folder / name, out.parent, label) for name, label in
                     (("viewer.html", "viewer"), ("episode_summary.jpg", "summary strip"))
                     if (folder / name).is_file()]
            links.append(_link(folder / "bundles" / EPISODE_METRICS if (folder / "bundles").is_dir()
                               else folder / EPISODE_METRICS, out.parent, "metrics (JSON)"))
        parts.append(f"<section><h3>{_e(title)}: {_outcome_html(ep)}</h3><p>{_e(prompt)}"
                     f"{' · ' + _e(info.get('steps')) + ' env steps' if 'steps' in info else ''} · "
                     f"{len(ep['calls'])} call(s) · " + " · ".join(links) + "</p>")
        if i < MAX_EPISODE_SECTIONS and ep["calls"]:
            parts.append(_img(plot_region_mass(ep["calls"], title), "mass per region"))
            parts.append(_img(plot_grounding_over_episodes([ep], camera), "grounding over the calls"))
        parts.append("</section>")
    if unusable:
        parts.append("<h2>Unusable episodes</h2><ul>" + "".join(f"<li>{_e(line)}</li>" for line in unusable)
                     + "</ul>")
    parts.append("</body></html>")
    # The page and its run_metrics.json are one output: both are written out before either replaces an older one
    # (a full disk, a read-only folder or a page path that is a folder leaves the old pair as it was).
    return replace_together([(out.parent / "run_metrics.json", json.dumps(run, allow_nan=False)),
                             (out, "\n".join(parts))])[-1]
