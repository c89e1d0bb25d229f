// pi0viz viewer: colors pi0 attention maps in the browser from compact uint8 data.
// A pi0-FAST page (META.kind "decoding") uses the same arrays with D = decode steps, A = 1 and a last drawn region
// "generated" (the tokens generated so far): the step slider is a decode-step slider (viewer/data.py).
// Data from the capture (prompt pieces, camera names, file names) only ever reaches the page through
// textContent, attributes set as properties, or canvas pixels: never through innerHTML.
'use strict';
(function () {
  const META = JSON.parse(document.getElementById('pi0viz-meta').textContent);
  const CALLS = META.calls || [];
  const TREE = META.tree || null;
  const BUNDLES = CALLS.length > 0;
  const DIMS = BUNDLES ? META.dims
    : { D: TREE.steps.length, L: TREE.layers.length, A: TREE.tokens.length, H: 0 };
  const NCALLS = BUNDLES ? CALLS.length : TREE.calls.length;
  const DECODING = (BUNDLES ? META.kind : TREE.kind) === 'decoding';
  const callD = (i) => (BUNDLES && CALLS[i].D ? CALLS[i].D : DIMS.D); // decoding calls may stop early (EOS)
  const MREG = META.massRegions || [];
  const ZOOM = META.zoom;
  const SCOPES = ['cell', 'region', 'layer', 'global'];
  const PALETTE = ['#4e9bd6', '#f28e2b', '#59a14f', '#e15759', '#b07aa1', '#edc948', '#76b7b2', '#ff9da7', '#9c755f', '#bab0ac'];
  const SQ = new Float32Array(256); // decoding of the square-root uint8 quantization (see viewer/data.py)
  for (let q = 0; q < 256; q++) SQ[q] = (q / 255) * (q / 255);

  const S = { call: 0, d: 0, a: 0, l: 0, head: -1, scope: 'cell', pct: null, gamma: 1, logDecades: null,
              decades: 3, cmap: META.colormap, alpha: 0.6, smooth: false, epMean: false, sum: 'none',
              sinks: false };
  const SINK_MIN = 0.2, SINK_ROWS = 0.9; // pi0viz.core.sinks.SinkCriterion: >= 0.2 in 90 % of a cell's token rows
  // Summary maps (as pi0viz.analysis.summaries): the fused maps reduced over these axes of [D, L, A].
  const SUMS = { none: null, tokens: { axes: 'a', op: 'mean' }, 'tokens-max': { axes: 'a', op: 'max' },
                 'tokens+steps': { axes: 'ad', op: 'mean' }, all: { axes: 'adl', op: 'mean' } };
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const clamp = (x, lo, hi) => Math.max(lo, Math.min(hi, x));
  const fmt = (x) => (x === 0 ? '0' : Math.abs(x) >= 0.01 ? x.toFixed(4) : x.toExponential(2));

  // ---------------------------------------------------------------- data blocks ("chunks")
  const loaded = {};
  const pending = {};
  const sideWaiters = {};
  window.pi0vizChunk = function (id, b64) { // called by a side file <page>_data/ID.js
    const w = sideWaiters[id];
    if (w) { delete sideWaiters[id]; w(b64); }
  };
  function fromBase64(s) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(s);
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function typed(bytes, dtype) {
    const buf = bytes.byteOffset === 0 ? bytes.buffer : bytes.slice().buffer;
    if (dtype === 'u8') return bytes;
    if (dtype === 'u16') return new Uint16Array(buf, 0, bytes.byteLength >> 1);
    if (dtype === 'f32') return new Float32Array(buf, 0, bytes.byteLength >> 2);
    throw new Error('unknown dtype ' + dtype);
  }
  function loadChunk(id) {
    if (loaded[id]) return Promise.resolve(loaded[id]);
    if (pending[id]) return pending[id];
    const spec = META.chunks[id];
    if (!spec) return Promise.reject(new Error('this page holds no data block ' + id));
    const node = document.getElementById('pi0viz-chunk-' + id);
    const text = node ? Promise.resolve(node.textContent) : new Promise((resolve, reject) => {
      sideWaiters[id] = resolve;
      const s = document.createElement('script');
      s.src = spec.file;
      s.onerror = () => {
        delete sideWaiters[id];
        reject(new Error('could not load ' + spec.file + ': keep the folder ' + spec.file.split('/')[0] + ' next to the page'));
      };
      document.head.appendChild(s);
    });
    pending[id] = text.then((b64) => {
      loaded[id] = typed(fromBase64(b64.trim()), spec.dtype);
      if (node) node.textContent = ''; // drop the base64 text: the bytes are all we need
      delete pending[id];
      return loaded[id];
    }, (err) => { delete pending[id]; throw err; });
    return pending[id];
  }

  // ---------------------------------------------------------------- per-call geometry and images
  const images = {}; // call -> {camera: HTMLImageElement}
  const imagePromises = {};
  function ensureImages(i) {
    if (!imagePromises[i]) {
      images[i] = {};
      const own = CALLS[i].prefix ? Object.entries(CALLS[i].prefix.images).map(([cam, url]) => ['prefix:' + cam, url]) : [];
      const jobs = Object.entries(CALLS[i].images).concat(own).map(([cam, url]) => { // prefix: its own images if they differ
        const img = new Image();
        img.src = url;
        images[i][cam] = img;
        return img.decode();
      });
      imagePromises[i] = Promise.all(jobs).then(() => { imagePromises[i].done = true; });
    }
    return imagePromises[i];
  }
  function geometry(i) { // drawn regions of call i, with the camera slot of each
    const c = CALLS[i];
    if (c.geo) return c.geo;
    const per = c.grid[0] * c.grid[1];
    const regions = c.drawnRegions.map(([name, start, stop]) => ({ name, start, stop, cam: c.cameras.indexOf(name) }));
    const textTokens = [];
    c.tokenMask.forEach((m, t) => { if (m) textTokens.push(t); });
    c.geo = { regions, per, textTokens, R: c.drawnKeys.length };
    return c.geo;
  }

  // ---------------------------------------------------------------- values and the color scale
  function cellValues(i, d, l, a, head) { // Float32Array [R]: probabilities of the drawn keys
    const { R } = geometry(i);
    const { L, A, H } = DIMS;
    const top = loaded['c' + i][(d * L + l) * A + a];
    const out = new Float32Array(R);
    let src, off;
    if (head < 0) { src = loaded['f' + i]; off = ((d * L + l) * A + a) * R; }
    else { src = loaded['h' + i + '_' + d]; off = ((l * A + a) * H + head) * R; }
    for (let k = 0; k < R; k++) out[k] = SQ[src[off + k]] * top;
    return out;
  }
  const sinkCache = {};
  function sinksOf(i, d, l) { // Uint8Array [R]: 1 where the drawn key is an attention sink of (step d, layer l)
    const key = [i, d, l].join('/');
    if (key in sinkCache) return sinkCache[key];
    const { R } = geometry(i);
    const A = DIMS.A;
    const hits = new Uint16Array(R);
    for (let a = 0; a < A; a++) {
      const v = cellValues(i, d, l, a, -1);
      for (let k = 0; k < R; k++) if (v[k] >= SINK_MIN) hits[k]++;
    }
    const need = Math.max(1, Math.ceil(SINK_ROWS * A - 1e-9));
    const out = new Uint8Array(R);
    for (let k = 0; k < R; k++) out[k] = hits[k] >= need ? 1 : 0;
    return (sinkCache[key] = out);
  }
  const sumCache = {};
  function summary(i, mode) { // {values: Float32Array [R], mass: Float32Array [M]} of the reduced cells
    const spec = SUMS[mode];
    const { L, A, H } = DIMS;
    const D = callD(i);
    const dd = spec.axes.includes('d') ? null : S.d, ll = spec.axes.includes('l') ? null : S.l;
    const key = [i, mode, dd, ll].join('/');
    if (key in sumCache) return sumCache[key];
    const { R } = geometry(i);
    const M = MREG.length, mass = loaded['m' + i];
    const values = new Float32Array(R), msum = new Float32Array(M);
    let n = 0;
    for (let d = 0; d < D; d++) for (let l = 0; l < L; l++) {
      if ((dd !== null && d !== dd) || (ll !== null && l !== ll)) continue;
      for (let a = 0; a < A; a++) {
        const v = cellValues(i, d, l, a, -1);
        if (spec.op === 'max') for (let k = 0; k < R; k++) values[k] = Math.max(values[k], v[k]);
        else for (let k = 0; k < R; k++) values[k] += v[k];
        const base = (((d * L + l) * A + a) * (H + 1) + H) * M; // head-mean mass
        for (let r = 0; r < M; r++) msum[r] = spec.op === 'max' ? Math.max(msum[r], mass[base + r] / 65535)
          : msum[r] + mass[base + r] / 65535;
        n++;
      }
    }
    if (spec.op === 'mean') { for (let k = 0; k < R; k++) values[k] /= n; for (let r = 0; r < M; r++) msum[r] /= n; }
    return (sumCache[key] = { values, mass: msum });
  }
  function topOf(values, scratch) { // max, or numpy's linear-interpolation percentile (scratch: may reorder values)
    const n = values.length;
    if (n === 0) return 0;
    if (S.pct === null) { let m = 0; for (let k = 0; k < n; k++) if (values[k] > m) m = values[k]; return m; }
    const v = scratch ? values : Float32Array.from(values); // selection reorders its input
    const pos = (S.pct / 100) * (n - 1);
    const lo = Math.floor(pos);
    const vlo = selectKth(v, lo);
    if (lo + 1 >= n) return vlo;
    let vhi = Infinity; // after selection everything right of lo is >= v[lo]: the next order statistic is their min
    for (let k = lo + 1; k < n; k++) if (v[k] < vhi) vhi = v[k];
    return vlo + (vhi - vlo) * (pos - lo);
  }
  function selectKth(a, k) { // in-place quickselect (Hoare partition, median-of-3 pivot): O(n), not O(n log n)
    let lo = 0, hi = a.length - 1;
    while (hi > lo) {
      const x = a[lo], y = a[(lo + hi) >> 1], z = a[hi];
      const pivot = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
      let i = lo, j = hi;
      while (i <= j) {
        while (a[i] < pivot) i++;
        while (a[j] > pivot) j--;
        if (i <= j) { const t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
      }
      if (k <= j) hi = j;
      else if (k >= i) lo = i;
      else return a[k];
    }
    return a[k];
  }
  const topCache = {};
  function groupTop(i, layer) { // top over all fused values of a layer (layer >= 0) or of the whole call
    const key = [i, layer, S.pct].join('/');
    if (key in topCache) return topCache[key];
    const { L, A } = DIMS;
    const D = callD(i);
    const { R } = geometry(i);
    let top = 0;
    if (S.pct === null) { // the cell maxima are exact
      const cm = loaded['c' + i];
      for (let d = 0; d < D; d++) for (let l = 0; l < L; l++) {
        if (layer >= 0 && l !== layer) continue;
        for (let a = 0; a < A; a++) top = Math.max(top, cm[(d * L + l) * A + a]);
      }
    } else {
      const f = loaded['f' + i], cm = loaded['c' + i];
      const all = new Float32Array((layer >= 0 ? D * A : D * L * A) * R);
      let n = 0;
      for (let d = 0; d < D; d++) for (let l = 0; l < L; l++) {
        if (layer >= 0 && l !== layer) continue;
        for (let a = 0; a < A; a++) {
          const cell = (d * L + l) * A + a, cmax = cm[cell], off = cell * R;
          for (let k = 0; k < R; k++) all[n++] = SQ[f[off + k]] * cmax;
        }
      }
      top = topOf(all, true);
    }
    topCache[key] = top;
    return top;
  }
  function scaleTops(i, fused) { // one top per drawn region, as pi0viz.fusion.scale_tops
    const { regions } = geometry(i);
    if (S.scope === 'region') return regions.map((r) => topOf(fused.subarray(r.start, r.stop)));
    let top;
    if (S.scope === 'cell') top = topOf(fused);
    else if (S.scope === 'layer') top = groupTop(i, S.l);
    else top = groupTop(i, -1);
    return regions.map(() => top);
  }
  function toLevels(i, values, tops) { // uint8 colormap indices, as pi0viz.fusion.to_levels
    const { regions } = geometry(i);
    const out = new Uint8Array(values.length);
    const useLog = S.logDecades !== null;
    regions.forEach((r, n) => {
      const top = tops[n];
      for (let k = r.start; k < r.stop; k++) {
        let v = top > 0 ? values[k] / top : 0;
        v = v < 0 ? 0 : v > 1 ? 1 : v;
        if (useLog) v = clamp(1 + Math.log10(Math.max(v, 1e-30)) / S.logDecades, 0, 1);
        else if (S.gamma !== 1) v = Math.pow(v, S.gamma);
        out[k] = Math.floor(v * 255 + 0.5);
      }
    });
    return out;
  }
  function lut() { return META.colormaps[S.cmap]; }
  function rgb(level) { const t = lut(); return 'rgb(' + t[3 * level] + ',' + t[3 * level + 1] + ',' + t[3 * level + 2] + ')'; }
  function ink(level) { // black on light colors, white on dark (Rec. 601 luma, as pi0viz.render)
    const t = lut();
    return 0.299 * t[3 * level] + 0.587 * t[3 * level + 1] + 0.114 * t[3 * level + 2] > 128 ? '#000' : '#fff';
  }

  // ---------------------------------------------------------------- DOM for one call
  let builtFor = -1;
  const camViews = {}; // camera name -> {canvas, ctx, patch, pctx, cap, region}
  const tokenSpans = [];
  const genSpans = []; // decoding: one span per generated token
  function buildCall(i) {
    if (builtFor === i) return;
    builtFor = i;
    const c = CALLS[i];
    const geo = geometry(i);
    const cams = $('cams');
    cams.replaceChildren();
    for (const k of Object.keys(camViews)) delete camViews[k];
    c.cameras.forEach((name, slot) => {
      if (!c.imageMasks[slot]) { // a padded slot: the model saw no image here; draw nothing
        const note = el('div', 'cam masked', name + ': padded camera slot (masked), not drawn');
        note.dataset.camera = name;
        cams.appendChild(note);
        return;
      }
      const card = el('div', 'cam');
      const canvas = el('canvas');
      canvas.width = c.imageSize[1] * ZOOM;
      canvas.height = c.imageSize[0] * ZOOM;
      canvas.dataset.camera = name;
      const patch = el('canvas');
      patch.width = c.grid[1];
      patch.height = c.grid[0];
      const cap = el('div', 'cap');
      card.append(canvas, cap);
      cams.appendChild(card);
      const region = geo.regions.find((r) => r.name === name && r.cam === slot);
      const view = { canvas, ctx: canvas.getContext('2d', { willReadFrequently: true }), patch,
                     pctx: patch.getContext('2d'), cap, region, slot, name };
      camViews[name] = view;
      canvas.addEventListener('mousemove', (ev) => camTip(ev, view));
      canvas.addEventListener('mouseleave', hideTip);
    });
    const tokens = $('tokens');
    tokens.replaceChildren();
    tokenSpans.length = 0;
    geo.textTokens.forEach((t, k) => {
      const span = el('span', 'tok', displayPiece(c.pieces[t]));
      span.dataset.token = String(t);
      span.dataset.index = String(k);
      span.addEventListener('mousemove', (ev) => tokTip(ev, k));
      span.addEventListener('mouseleave', hideTip);
      tokens.appendChild(span);
      tokenSpans.push(span);
    });
    const gen = $('gen-tokens');
    gen.replaceChildren();
    genSpans.length = 0;
    $('gen-panel').hidden = !DECODING;
    if (DECODING) {
      c.generatedIds.forEach((id, j) => { // every generated token; those after the current step are greyed out
        const span = el('span', 'tok', c.generatedPieces ? displayPiece(c.generatedPieces[j]) : '#' + id);
        span.dataset.step = String(j);
        span.dataset.id = String(id);
        span.addEventListener('mousemove', (ev) => genTip(ev, j));
        span.addEventListener('mouseleave', hideTip);
        gen.appendChild(span);
        genSpans.push(span);
      });
    }
    const prompt = c.prompt ? 'prompt: ' + c.prompt : '';
    $('prompt').textContent = prompt + (NCALLS > 1 || c.source ? '  [' + c.source + ']' : '');
    buildHeadOptions(i);
  }
  function displayPiece(p) { // visible BOS/newline/space, as the renderer's text map
    if (p === '\n') return '\u23ce';
    return p.replace(/\u2581/g, '\u00b7').replace(/\n/g, '\u23ce').replace(/[\u0000-\u001f]/g, (ch) => '\\x' + ch.charCodeAt(0).toString(16).padStart(2, '0')) || '\u2205';
  }
  function buildHeadOptions(i) {
    const sel = $('sel-head');
    sel.replaceChildren(new Option('fused (max over heads)', '-1'));
    const has = CALLS[i].heads && DIMS.H > 1;
    if (has) for (let h = 0; h < DIMS.H; h++) sel.appendChild(new Option('head ' + h, String(h)));
    sel.disabled = !has;
    sel.title = has ? '' : 'per-head maps not in this page (write it with --heads side or embed)';
    if (!has) S.head = -1;
    sel.value = String(S.head);
  }

  // ---------------------------------------------------------------- drawing
  const VIEW = {}; // what is on screen, for tooltips (and tests)
  function render() {
    const i = S.call;
    buildCall(i);
    const geo = geometry(i);
    const sum = SUMS[S.sum] ? summary(i, S.sum) : null; // a summary shows fused maps only
    const values = sum ? sum.values : cellValues(i, S.d, S.l, S.a, S.head);
    const fused = sum || S.head < 0 ? values : cellValues(i, S.d, S.l, S.a, -1);
    const sinks = S.sinks && !sum ? sinksOf(i, S.d, S.l) : null; // --exclude-sinks: scale without them
    const tops = scaleTops(i, sinks ? fused.map((v, k) => (sinks[k] ? 0 : v)) : fused); // heads: the fused scale
    const levels = toLevels(i, values, tops);
    Object.assign(VIEW, { call: i, d: S.d, l: S.l, a: S.a, head: S.head, sum: S.sum, values, levels, tops, sinks });
    const t = lut();
    const mass = loaded['m' + i];
    const hi = S.head < 0 ? DIMS.H : S.head;
    const M = MREG.length;
    const massBase = (((S.d * DIMS.L + S.l) * DIMS.A + S.a) * (DIMS.H + 1) + hi) * M;
    const massOf = (r) => (r < 0 ? NaN : sum ? sum.mass[r] : mass[massBase + r] / 65535);
    for (const view of Object.values(camViews)) {
      const { ctx, canvas, patch, pctx, region } = view;
      const img = images[i][view.name];
      ctx.globalAlpha = 1;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      const px = pctx.createImageData(patch.width, patch.height);
      for (let p = 0; p < geo.per; p++) {
        const lv = levels[region.start + p];
        px.data[4 * p] = t[3 * lv]; px.data[4 * p + 1] = t[3 * lv + 1]; px.data[4 * p + 2] = t[3 * lv + 2];
        px.data[4 * p + 3] = 255;
      }
      pctx.putImageData(px, 0, 0);
      ctx.globalAlpha = S.alpha;
      ctx.imageSmoothingEnabled = S.smooth; // off: nearest, so patch (r, c) is exactly its pixel block
      ctx.imageSmoothingQuality = 'high';
      ctx.drawImage(patch, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
      if (sinks) { // outline the sink patches in cyan, as the renderer does
        const cols = CALLS[i].grid[1], bw = canvas.width / cols, bh = canvas.height / CALLS[i].grid[0];
        ctx.strokeStyle = '#00ffff'; ctx.lineWidth = ZOOM;
        for (let p = 0; p < geo.per; p++) {
          if (sinks[region.start + p]) ctx.strokeRect((p % cols) * bw + ZOOM / 2, Math.floor(p / cols) * bh + ZOOM / 2, bw - ZOOM, bh - ZOOM);
        }
      }
      let vmax = 0;
      for (let k = region.start; k < region.stop; k++) vmax = Math.max(vmax, values[k]);
      const mi = MREG.findIndex((m) => m[0] === view.name);
      const n = geo.regions.indexOf(region);
      setCaption(view.cap, view.name, vmax, massOf(mi), tops[n]);
    }
    const textRegion = geo.regions.find((r) => r.name === 'text' && r.cam < 0);
    tokenSpans.forEach((span, k) => {
      const lv = levels[textRegion.start + k];
      span.style.backgroundColor = rgb(lv);
      span.style.color = ink(lv);
      span.dataset.level = String(lv);
      span.classList.toggle('sink', !!(sinks && sinks[textRegion.start + k]));
    });
    if (DECODING) renderGenerated(i, geo, levels);
    renderLegend(tops, massOf(MREG.findIndex((m) => m[1] === 'text')));
    renderMassGrid();
    renderEpisode();
    renderTree();
    renderPrefix();
    markReady();
  }
  function renderGenerated(i, geo, levels) { // the map over the tokens generated so far, and the query's caption
    const c = CALLS[i];
    const j = c.stepIndices[S.d]; // the decode step: its query is the token generated at step j
    const region = geo.regions.find((r) => r.name === 'generated' && r.cam < 0);
    genSpans.forEach((span, k) => {
      const seen = k <= j; // step j's query attends to tokens 0..j (itself included), not to later ones
      const lv = seen ? levels[region.start + k] : 0;
      span.style.backgroundColor = seen ? rgb(lv) : '';
      span.style.color = seen ? ink(lv) : '';
      span.dataset.level = seen ? String(lv) : '';
      span.classList.toggle('future', !seen);
      span.classList.toggle('query', k === j);
    });
    $('query-caption').textContent = 'decode step ' + j + ' generates token ' + j + ': ' + generatedName(c, j) +
      '  (layer ' + layerLabel(S.l) + ')';
  }
  function genTip(ev, k) {
    const c = CALLS[S.call];
    const region = geometry(S.call).regions.find((r) => r.name === 'generated' && r.cam < 0);
    const idx = region.start + k;
    showTip(ev, 'generated token ' + k + '  ' + generatedName(c, k) + '  key ' + c.drawnKeys[idx] +
      '\np = ' + fmt(VIEW.values[idx]) + '  level ' + VIEW.levels[idx]);
  }
  function setCaption(cap, name, vmax, mass, top) {
    cap.replaceChildren(el('span', 'camname', name), document.createTextNode(
      '  max p ' + fmt(vmax) + '  mass ' + (isNaN(mass) ? '-' : mass.toFixed(3)) + '  top ' + fmt(top)));
  }
  function renderLegend(tops, textMass) {
    const cv = $('colorbar');
    const ctx = cv.getContext('2d');
    const t = lut();
    const img = ctx.createImageData(256, 1);
    for (let k = 0; k < 256; k++) { img.data.set([t[3 * k], t[3 * k + 1], t[3 * k + 2], 255], 4 * k); }
    const tmp = el('canvas'); tmp.width = 256; tmp.height = 1;
    tmp.getContext('2d').putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tmp, 0, 0, cv.width, cv.height);
    const scopeName = { cell: 'shared per cell', region: 'per region', layer: 'per layer', global: 'global (call)' }[S.scope];
    const transform = S.logDecades !== null ? ', log ' + S.logDecades + ' decades' : S.gamma !== 1 ? ', gamma ' + S.gamma : '';
    const pct = S.pct === null ? 'max' : S.pct + 'th percentile';
    const uniq = [...new Set(tops.map((x) => fmt(x)))];
    const nsink = VIEW.sinks ? VIEW.sinks.reduce((n, x) => n + x, 0) : 0;
    $('scale-label').textContent = '0 \u2192 top = ' + uniq.join(' / ') + '  (' + scopeName + ', ' + pct + transform +
      ')   ' + (SUMS[S.sum] ? 'summary: ' + $('sel-sum').selectedOptions[0].textContent + ' of the fused maps'
        : S.head < 0 ? 'fused: max over heads' : 'head ' + S.head + ' on the fused scale') +
      '   prompt mass ' + (isNaN(textMass) ? '-' : textMass.toFixed(3)) +
      (VIEW.sinks ? '   scale w/o sinks (' + nsink + ' outlined)' : '');
  }

  // ---------------------------------------------------------------- overview: layer x step grid per region
  const GW = 14, GH = 10; // grid cell size in CSS pixels
  function massGrid(i, a, head) { // [M][L][D] mass for action token a (head -1: mean over heads)
    const { L, A, H } = DIMS;
    const D = callD(i);
    const M = MREG.length;
    const mass = loaded['m' + i];
    const hi = head < 0 ? H : head;
    return MREG.map((_, r) => Array.from({ length: L }, (_, l) => Array.from({ length: D }, (_, d) =>
      mass[(((d * L + l) * A + a) * (H + 1) + hi) * M + r] / 65535)));
  }
  function visibleRegions(i) { // mass regions to show: masked cameras are not drawn
    const c = CALLS[i];
    return MREG.map((m, r) => r).filter((r) => MREG[r][1] !== 'camera' || c.imageMasks[c.cameras.indexOf(MREG[r][0])]);
  }
  let gridViews = null;
  function renderMassGrid() {
    const i = S.call;
    const { L } = DIMS;
    const D = callD(i);
    const grid = massGrid(i, S.a, S.head);
    const show = visibleRegions(i);
    const key = show.join(',') + '/' + D;
    if (!gridViews || gridViews.key !== key) {
      const host = $('massgrid');
      host.replaceChildren();
      gridViews = { key, items: [] };
      show.forEach((r) => {
        const box = el('div', 'grid');
        const cv = el('canvas');
        cv.width = D * GW; cv.height = L * GH;
        cv.dataset.region = MREG[r][0];
        box.append(el('span', 'gname', MREG[r][0]), cv);
        host.appendChild(box);
        const cell = (ev) => {
          const b = cv.getBoundingClientRect();
          return [clamp(Math.floor((ev.clientX - b.left) / b.width * D), 0, D - 1),
                  clamp(Math.floor((ev.clientY - b.top) / b.height * L), 0, L - 1)];
        };
        cv.addEventListener('mousemove', (ev) => {
          const [d, l] = cell(ev);
          const v = massGrid(S.call, S.a, S.head)[r][l][d];
          showTip(ev, MREG[r][0] + '\nstep ' + stepLabel(d) + '  layer ' + layerLabel(l) + '\nmass ' + v.toFixed(4));
        });
        cv.addEventListener('mouseleave', hideTip);
        cv.addEventListener('click', (ev) => { const [d, l] = cell(ev); S.d = d; S.l = l; update(); });
        gridViews.items.push({ r, cv });
      });
    }
    const drawKey = [i, S.a, S.head, S.d, S.l, S.cmap].join('/');
    if (gridViews.drawn === drawKey) return; // scrubbing the other controls leaves the grid as it is
    gridViews.drawn = drawKey;
    let gmax = 0;
    show.forEach((r) => grid[r].forEach((row) => row.forEach((v) => { gmax = Math.max(gmax, v); })));
    gridViews.gmax = gmax;
    const t = lut();
    const small = gridViews.small || (gridViews.small = el('canvas'));
    small.width = D; small.height = L;
    const sctx = small.getContext('2d');
    for (const item of gridViews.items) {
      const { r, cv } = item;
      const px = sctx.createImageData(D, L); // one pixel per (step, layer), scaled up below
      for (let l = 0; l < L; l++) for (let d = 0; d < D; d++) {
        const lv = gmax > 0 ? Math.floor(clamp(grid[r][l][d] / gmax, 0, 1) * 255 + 0.5) : 0;
        px.data.set([t[3 * lv], t[3 * lv + 1], t[3 * lv + 2], 255], 4 * (l * D + d));
      }
      sctx.putImageData(px, 0, 0);
      const ctx = item.ctx || (item.ctx = cv.getContext('2d'));
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(small, 0, 0, cv.width, cv.height);
      ctx.strokeStyle = '#5ad1ff';
      ctx.lineWidth = 2;
      ctx.strokeRect(S.d * GW + 1, S.l * GH + 1, GW - 2, GH - 2);
    }
  }

  // ---------------------------------------------------------------- overview: mass across inference calls
  function episodeMass() { // [N][M]: the current cell's head-mean mass per region, or its mean over all cells
    const e = loaded.e;
    const { D, L, A } = DIMS; // e is [N, D, L, A, M] with D the longest call's (shorter calls padded with 0)
    const M = MREG.length;
    const cells = D * L * A;
    return CALLS.map((_, n) => MREG.map((_, r) => {
      if (!S.epMean) return e[((n * D + S.d) * L + S.l) * A * M + S.a * M + r] / 65535;
      const own = callD(n) * L * A; // the call's own cells only
      let s = 0;
      for (let k = 0; k < own; k++) s += e[(n * cells + k) * M + r];
      return s / own / 65535;
    }));
  }
  function renderEpisode() {
    if (NCALLS < 2) return;
    $('episode').hidden = false;
    const cv = $('episode-chart');
    const ctx = cv.getContext('2d');
    const width = clamp(NCALLS * 40, 240, 1200); // bars stay readable from 2 to ~600 calls
    if (cv.width !== width) cv.width = width;
    const data = episodeMass();
    const bw = cv.width / NCALLS;
    ctx.clearRect(0, 0, cv.width, cv.height);
    const h = cv.height - 12;
    data.forEach((row, n) => {
      let y = h;
      row.forEach((v, r) => {
        ctx.fillStyle = PALETTE[r % PALETTE.length];
        ctx.fillRect(n * bw + 1, y - v * h, Math.max(1, bw - 2), v * h);
        y -= v * h;
      });
    });
    ctx.fillStyle = '#5ad1ff';
    ctx.fillRect(S.call * bw, cv.height - 8, Math.max(2, bw), 6);
    const legend = $('episode-legend');
    if (!legend.childElementCount) {
      MREG.forEach(([name, kind], r) => {
        const slotUsed = (c) => c.imageMasks[c.cameras.indexOf(name)];
        if (kind === 'camera' && !CALLS.some(slotUsed)) return; // a slot masked in every call: never drawn
        const item = el('span');
        const sw = el('span', 'sw');
        sw.style.background = PALETTE[r % PALETTE.length];
        item.append(sw, document.createTextNode(name));
        legend.appendChild(item);
      });
    }
  }
  function episodeTip(ev) {
    const cv = $('episode-chart');
    const b = cv.getBoundingClientRect();
    const n = clamp(Math.floor((ev.clientX - b.left) / b.width * NCALLS), 0, NCALLS - 1);
    const row = episodeMass()[n];
    showTip(ev, 'inference step ' + CALLS[n].step + (S.epMean ? ' (mean over cells)' : '') + '\n' +
      MREG.map(([name], r) => name + ': ' + row[r].toFixed(4)).join('\n'));
    return n;
  }

  // ---------------------------------------------------------------- attention_viz tree (JPEG files)
  const treeImgs = [];
  function treePath(file) {
    let n, d, a, l;
    if (BUNDLES) {
      const c = CALLS[S.call];
      n = c.step; d = c.stepIndices[S.d]; a = S.a; l = c.layerIndices[S.l];
    } else {
      n = TREE.calls[S.call]; d = TREE.steps[S.d]; a = TREE.tokens[S.a]; l = TREE.layers[S.l];
    }
    const root = TREE.root.split('/').map((p) => (p === '..' || p === '.' ? p : encodeURIComponent(p))).join('/');
    if (TREE.kind === 'decoding') {
      return root + '/inference_timestep_' + n + '/decode_step_' + d + '/layer_' + l + '/' + encodeURIComponent(file);
    }
    return root + '/inference_timestep_' + n + '/diffusion_timestep_' + d + '/action_token_' + a + '/layer_' + l +
      '/' + encodeURIComponent(file);
  }
  function renderTree() {
    if (!TREE) return;
    const panel = $('tree-panel');
    panel.hidden = false;
    if (!treeImgs.length) {
      const host = $('tree-files');
      TREE.files.forEach((file) => {
        const fig = el('figure');
        const img = el('img');
        img.alt = file;
        img.addEventListener('error', () => img.classList.add('missing'));
        img.addEventListener('load', () => img.classList.remove('missing'));
        fig.append(img, el('figcaption', '', file));
        host.appendChild(fig);
        treeImgs.push({ file, img });
      });
    }
    for (const { file, img } of treeImgs) {
      const src = treePath(file);
      if (img.getAttribute('src') !== src) img.setAttribute('src', src);
    }
  }

  // ---------------------------------------------------------------- tooltips
  function showTip(ev, text) {
    const tip = $('tip');
    tip.textContent = text;
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 260) + 'px';
    tip.style.top = (ev.clientY + 14) + 'px';
  }
  function hideTip() { $('tip').hidden = true; }
  function camTip(ev, view) {
    const c = CALLS[S.call];
    const b = view.canvas.getBoundingClientRect();
    const row = clamp(Math.floor((ev.clientY - b.top) / b.height * c.grid[0]), 0, c.grid[0] - 1);
    const col = clamp(Math.floor((ev.clientX - b.left) / b.width * c.grid[1]), 0, c.grid[1] - 1);
    const k = view.region.start + row * c.grid[1] + col;
    showTip(ev, view.name + '  patch (' + row + ', ' + col + ')  key ' + c.drawnKeys[k] +
      '\np = ' + fmt(VIEW.values[k]) + '  level ' + VIEW.levels[k] + (S.head < 0 ? '  (fused)' : '  (head ' + S.head + ')'));
  }
  function tokTip(ev, k) {
    const c = CALLS[S.call];
    const geo = geometry(S.call);
    const textRegion = geo.regions.find((r) => r.name === 'text' && r.cam < 0);
    const idx = textRegion.start + k;
    const t = geo.textTokens[k];
    showTip(ev, 'token ' + t + '  ' + JSON.stringify(c.pieces[t]) + '  key ' + c.drawnKeys[idx] +
      '\np = ' + fmt(VIEW.values[idx]) + '  level ' + VIEW.levels[idx] + (S.head < 0 ? '  (fused)' : '  (head ' + S.head + ')'));
  }

  // ---------------------------------------------------------------- controls, keyboard, URL hash
  function generatedName(c, j) { // the token generated at decode step j: its id, and its text if the bundle has it
    const id = c.generatedIds[j];
    return 'id ' + id + (c.generatedPieces ? ' ' + JSON.stringify(displayPiece(c.generatedPieces[j])) : '');
  }
  function stepLabel(d) {
    if (!BUNDLES) return String(TREE.steps[d]);
    const c = CALLS[S.call];
    if (DECODING) return c.stepIndices[d] + ': ' + generatedName(c, c.stepIndices[d]);
    return c.stepIndices[d] + ' (t = ' + c.times[d].toFixed(2) + ')';
  }
  function layerLabel(l) { return String(BUNDLES ? CALLS[S.call].layerIndices[l] : TREE.layers[l]); }
  function syncControls() {
    S.call = clamp(S.call, 0, NCALLS - 1); S.d = clamp(S.d, 0, callD(S.call) - 1);
    $('s-step').max = String(callD(S.call) - 1);
    S.a = clamp(S.a, 0, DIMS.A - 1); S.l = clamp(S.l, 0, DIMS.L - 1);
    $('s-call').value = S.call; $('s-step').value = S.d; $('s-token').value = S.a; $('s-layer').value = S.l;
    $('o-call').textContent = (BUNDLES ? CALLS[S.call].step : TREE.calls[S.call]) + '  (' + (S.call + 1) + ' / ' + NCALLS + ')';
    $('o-step').textContent = stepLabel(S.d);
    $('o-token').textContent = String(BUNDLES ? S.a : TREE.tokens[S.a]);
    $('o-layer').textContent = layerLabel(S.l);
    $('sel-head').value = String(S.head); $('sel-scope').value = S.scope;
    $('in-pct').value = S.pct === null ? '' : S.pct; $('in-gamma').value = S.gamma;
    $('chk-log').checked = S.logDecades !== null; $('in-decades').value = S.decades;
    $('sel-cmap').value = S.cmap; $('s-alpha').value = S.alpha; $('chk-smooth').checked = S.smooth;
    $('sel-sum').value = S.sum; $('chk-sinks').checked = S.sinks;
    const axes = SUMS[S.sum] ? SUMS[S.sum].axes : ''; // the sliders of reduced axes do nothing: grey them out
    $('s-token').disabled = axes.includes('a'); $('s-step').disabled = axes.includes('d');
    $('s-layer').disabled = axes.includes('l'); $('sel-head').disabled = axes !== '';
    scheduleHash();
  }
  function setupControls() {
    const sliders = { 's-call': ['call', NCALLS], 's-step': ['d', DIMS.D], 's-token': ['a', DIMS.A], 's-layer': ['l', DIMS.L] };
    for (const [id, [field, n]] of Object.entries(sliders)) {
      const s = $(id);
      s.max = String(n - 1);
      s.addEventListener('input', () => { S[field] = Number(s.value); update(); });
    }
    $('row-call').hidden = NCALLS < 2;
    if (DECODING) { // one query per decode step: no action tokens, no summaries over them, no sinks over their rows
      $('name-step').textContent = 'decode step';
      $('massgrid-title').textContent = 'Attention mass per region: layer (rows) \u00d7 decode step (columns)';
      $('row-token').hidden = true;
      document.querySelectorAll('.denoising-only').forEach((n) => { n.hidden = true; });
      S.sum = 'none'; S.sinks = false; S.a = 0;
    }
    for (const name of Object.keys(META.colormaps)) $('sel-cmap').appendChild(new Option(name, name));
    const on = (id, ev, fn) => $(id).addEventListener(ev, () => { fn($(id)); update(); });
    on('sel-head', 'change', (e) => { S.head = Number(e.value); });
    on('sel-scope', 'change', (e) => { S.scope = e.value; });
    on('in-pct', 'change', (e) => { const v = parseFloat(e.value); S.pct = v > 0 && v <= 100 ? v : null; });
    on('in-gamma', 'change', (e) => { const v = parseFloat(e.value); S.gamma = v > 0 ? v : 1; });
    on('chk-log', 'change', (e) => { S.logDecades = e.checked ? S.decades : null; });
    on('in-decades', 'change', (e) => { const v = parseFloat(e.value); S.decades = v > 0 ? v : 3; if (S.logDecades !== null) S.logDecades = S.decades; });
    on('sel-cmap', 'change', (e) => { S.cmap = e.value; });
    on('s-alpha', 'input', (e) => { S.alpha = Number(e.value); });
    on('chk-smooth', 'change', (e) => { S.smooth = e.checked; });
    on('sel-sum', 'change', (e) => { S.sum = e.value in SUMS ? e.value : 'none'; });
    on('chk-sinks', 'change', (e) => { S.sinks = e.checked; });
    on('chk-epmean', 'change', (e) => { S.epMean = e.checked; });
    const chart = $('episode-chart');
    chart.addEventListener('mousemove', episodeTip);
    chart.addEventListener('mouseleave', hideTip);
    chart.addEventListener('click', (ev) => { S.call = episodeTip(ev); update(); });
    document.addEventListener('keydown', onKey);
    if (!BUNDLES) document.querySelectorAll('.bundle-only').forEach((n) => { n.hidden = true; });
  }
  function onKey(ev) {
    const tag = ev.target && ev.target.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA' || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const step = { ArrowLeft: ['a', -1], ArrowRight: ['a', 1], ArrowUp: ['l', 1], ArrowDown: ['l', -1],
                   '[': ['d', -1], ']': ['d', 1], ',': ['call', -1], '.': ['call', 1] }[ev.key];
    if (step) S[step[0]] += step[1];
    else if (ev.key === 'h' && BUNDLES && CALLS[S.call].heads) S.head = S.head + 1 >= DIMS.H ? -1 : S.head + 1;
    else if (ev.key === 'H' && BUNDLES && CALLS[S.call].heads) S.head = S.head <= -1 ? DIMS.H - 1 : S.head - 1;
    else if (ev.key === 'f') S.head = -1;
    else if (ev.key === 's') S.scope = SCOPES[(SCOPES.indexOf(S.scope) + 1) % SCOPES.length];
    else if (ev.key === 'g') S.logDecades = S.logDecades === null ? S.decades : null;
    else return;
    ev.preventDefault();
    update();
  }
  let hashTimer = 0;
  function scheduleHash() { // shareable state; throttled (browsers limit history updates)
    clearTimeout(hashTimer);
    hashTimer = setTimeout(() => {
      const q = new URLSearchParams({ call: S.call, d: S.d, a: S.a, l: S.l, head: S.head, scope: S.scope });
      if (S.pct !== null) q.set('pct', S.pct);
      if (S.gamma !== 1) q.set('gamma', S.gamma);
      if (S.logDecades !== null) q.set('log', S.logDecades);
      if (S.cmap !== META.colormap) q.set('cmap', S.cmap);
      q.set('alpha', S.alpha);
      if (S.smooth) q.set('smooth', 1);
      if (S.sum !== 'none') q.set('sum', S.sum);
      if (S.sinks) q.set('sinks', 1);
      try { history.replaceState(null, '', '#' + q.toString()); } catch (e) { /* some file:// setups refuse */ }
    }, 250);
  }
  function parseHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    const num = (k, dflt) => (q.has(k) && isFinite(parseFloat(q.get(k))) ? parseFloat(q.get(k)) : dflt);
    S.call = Math.round(num('call', S.call)); S.d = Math.round(num('d', S.d)); S.a = Math.round(num('a', S.a));
    S.l = Math.round(num('l', S.l)); S.head = Math.round(num('head', S.head));
    if (SCOPES.includes(q.get('scope'))) S.scope = q.get('scope');
    const pct = num('pct', null); S.pct = pct > 0 && pct <= 100 ? pct : null;
    const gamma = num('gamma', 1); S.gamma = gamma > 0 ? gamma : 1;
    const dec = num('log', null); S.logDecades = dec > 0 ? dec : null; if (dec > 0) S.decades = dec;
    if (q.get('cmap') in META.colormaps) S.cmap = q.get('cmap');
    S.alpha = clamp(num('alpha', S.alpha), 0, 1); S.smooth = q.get('smooth') === '1';
    if (q.get('sum') in SUMS) S.sum = q.get('sum');
    S.sinks = q.get('sinks') === '1';
    if (BUNDLES && !CALLS[clamp(S.call, 0, NCALLS - 1)].heads) S.head = -1;
    if (DECODING) { S.sum = 'none'; S.sinks = false; S.a = 0; }
    S.head = clamp(S.head, -1, DIMS.H - 1);
  }

  // ---------------------------------------------------------------- update loop
  function setStatus(text, error) { const s = $('status'); s.textContent = text; s.classList.toggle('error', !!error); }
  function needed() {
    const i = S.call;
    const ids = ['f' + i, 'c' + i, 'm' + i, 'e'].concat(prefixIds(i));
    if (S.head >= 0) ids.push('h' + i + '_' + S.d);
    return ids;
  }
  let generation = 0;
  function update() {
    syncControls();
    if (!BUNDLES) { renderTree(); markReady(); return; }
    const missing = needed().filter((id) => !loaded[id]);
    const imgs = ensureImages(S.call);
    if (!missing.length && imgs.done) { render(); return; } // the scrubbing path: synchronous
    const gen = ++generation;
    setStatus('loading ' + (missing.length ? missing.join(', ') : 'images') + '\u2026');
    Promise.all(missing.map(loadChunk).concat([imgs])).then(() => {
      if (gen !== generation) return;
      setStatus('');
      render();
    }).catch((err) => setStatus(String(err && err.message ? err.message : err), true));
  }
  let ready = false;
  function markReady() {
    if (ready) return;
    ready = true;
    window.pi0vizReadyAt = performance.now();
    document.documentElement.dataset.ready = '1';
  }

  // ---------------------------------------------------------------- the prefix's own attention (pi0viz.prefix/1)
  // A call with a prefix side file gets this panel: its own layer slider (the prefix runs through every LLM layer)
  // and one selection, a prompt token (mode 'token': where it reads in each camera, prompt_to_image) or a camera
  // patch (mode 'patch': which prompt tokens it reads, image_to_prompt, and which patches, image_to_image). Values
  // decode as the maps do, (q / 255)^2 * row max (viewer/prefix.py); each camera (and the prompt) is scaled to its
  // own maximum, as pi0viz.render.prefix draws its tree. The action tokens' views above are untouched by it.
  const P = { layer: 0, mode: 'token', token: 0, cam: null, patch: 0 };
  const PVIEW = {};
  const pViews = {};
  const pTokens = [];
  let prefixBuiltFor = -1;
  function prefixIds(i) {
    return CALLS[i] && CALLS[i].prefix ? ['pp', 'ppm', 'pq', 'pqm', 'pg', 'pgm'].map((n) => n + i) : [];
  }
  function prefixRow(i, name, rows, K, l, r) { // Float32Array [K]: row r of block `name` at stored layer l
    const q = loaded[name + i];
    const top = loaded[name + 'm' + i][l * rows + r];
    const out = new Float32Array(K);
    const off = (l * rows + r) * K;
    for (let k = 0; k < K; k++) out[k] = SQ[q[off + k]] * top;
    return out;
  }
  function ownLevels(values, start, stop) { // levels of values[start:stop] against their own maximum
    let peak = 0, mass = 0;
    for (let k = start; k < stop; k++) { peak = Math.max(peak, values[k]); mass += values[k]; }
    const levels = new Uint8Array(stop - start);
    if (peak > 0) for (let k = start; k < stop; k++) levels[k - start] = Math.min(255, Math.floor(values[k] * (255 / peak) + 0.5));
    return { levels, peak, mass };
  }
  function buildPrefix(i) {
    const pf = CALLS[i].prefix;
    $('prefix-panel').hidden = !pf;
    if (prefixBuiltFor === i) return;
    prefixBuiltFor = i;
    const host = $('prefix-cams');
    host.replaceChildren();
    for (const k of Object.keys(pViews)) delete pViews[k];
    const toks = $('prefix-tokens');
    toks.replaceChildren();
    pTokens.length = 0;
    if (!pf) return;
    $('s-player').max = String(pf.layers.length - 1);
    P.layer = clamp(P.layer, 0, pf.layers.length - 1);
    P.token = clamp(P.token, 0, Math.max(0, pf.slots.length - 1));
    if (!pf.cameras.includes(P.cam)) P.cam = pf.cameras[0];
    P.patch = clamp(P.patch, 0, pf.grid[0] * pf.grid[1] - 1);
    if (!pf.slots.length) P.mode = 'patch';
    pf.cameras.forEach((name, k) => {
      const card = el('div', 'cam');
      const canvas = el('canvas');
      canvas.width = pf.imageSize[1] * ZOOM;
      canvas.height = pf.imageSize[0] * ZOOM;
      canvas.dataset.prefixCamera = name;
      const patch = el('canvas');
      patch.width = pf.grid[1];
      patch.height = pf.grid[0];
      const cap = el('div', 'cap');
      card.append(canvas, cap);
      host.appendChild(card);
      const view = { canvas, ctx: canvas.getContext('2d', { willReadFrequently: true }), patch,
                     pctx: patch.getContext('2d'), cap, k, name };
      pViews[name] = view;
      const cell = (ev) => {
        const b = canvas.getBoundingClientRect();
        return [clamp(Math.floor((ev.clientY - b.top) / b.height * pf.grid[0]), 0, pf.grid[0] - 1),
                clamp(Math.floor((ev.clientX - b.left) / b.width * pf.grid[1]), 0, pf.grid[1] - 1)];
      };
      canvas.addEventListener('click', (ev) => {
        const [row, col] = cell(ev);
        Object.assign(P, { mode: 'patch', cam: name, patch: row * pf.grid[1] + col });
        update();
      });
      canvas.addEventListener('mousemove', (ev) => {
        const [row, col] = cell(ev);
        const v = PVIEW.imageValues ? PVIEW.imageValues[k * pf.grid[0] * pf.grid[1] + row * pf.grid[1] + col] : 0;
        showTip(ev, name + '  patch (' + row + ', ' + col + ')\np = ' + fmt(v) + '  (click: what this patch reads)');
      });
      canvas.addEventListener('mouseleave', hideTip);
    });
    pf.pieces.forEach((piece, k) => {
      const span = el('span', 'tok', displayPiece(piece));
      span.dataset.slot = String(pf.slots[k]);
      span.dataset.index = String(k);
      span.addEventListener('click', () => { Object.assign(P, { mode: 'token', token: k }); update(); });
      span.addEventListener('mousemove', (ev) => showTip(ev, 'prompt slot ' + pf.slots[k] + '  ' + JSON.stringify(piece) +
        (PVIEW.tokenValues ? '\np = ' + fmt(PVIEW.tokenValues[k]) : '') + '\n(click: where this token reads)'));
      span.addEventListener('mouseleave', hideTip);
      toks.appendChild(span);
      pTokens.push(span);
    });
  }
  function renderPrefix() {
    const i = S.call;
    buildPrefix(i);
    const pf = CALLS[i].prefix;
    if (!pf) { PVIEW.call = null; return; }
    const N = pf.grid[0] * pf.grid[1], T = pf.slots.length, RI = pf.cameras.length * N;
    const l = P.layer;
    $('s-player').value = String(l);
    $('o-player').textContent = String(pf.layers[l]) + '  (' + (l + 1) + ' / ' + pf.layers.length + ')';
    let imageValues, tokenValues = null, caption;
    if (P.mode === 'token') {
      imageValues = prefixRow(i, 'pp', T, RI, l, P.token);
      caption = 'prompt token ' + pf.slots[P.token] + ' ' + JSON.stringify(displayPiece(pf.pieces[P.token])) +
        ' reads these patches (prompt_to_image), layer ' + pf.layers[l];
    } else {
      const r = pf.cameras.indexOf(P.cam) * N + P.patch;
      imageValues = prefixRow(i, 'pg', RI, RI, l, r);
      tokenValues = prefixRow(i, 'pq', RI, T, l, r);
      caption = P.cam + ' patch (' + Math.floor(P.patch / pf.grid[1]) + ', ' + (P.patch % pf.grid[1]) +
        ') reads these prompt tokens (image_to_prompt) and patches (image_to_image), layer ' + pf.layers[l];
    }
    $('prefix-caption').textContent = caption + '; each camera and the prompt scaled to its own maximum';
    const t = lut();
    const levels = {};
    for (const view of Object.values(pViews)) {
      const { ctx, canvas, patch, pctx, k, name } = view;
      const own = ownLevels(imageValues, k * N, (k + 1) * N);
      levels[name] = Array.from(own.levels);
      const img = images[i]['prefix:' + name] || images[i][name];
      ctx.globalAlpha = 1;
      ctx.imageSmoothingEnabled = false;
      if (img) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      const px = pctx.createImageData(patch.width, patch.height);
      for (let p = 0; p < N; p++) {
        const lv = own.levels[p];
        px.data[4 * p] = t[3 * lv]; px.data[4 * p + 1] = t[3 * lv + 1]; px.data[4 * p + 2] = t[3 * lv + 2];
        px.data[4 * p + 3] = 255;
      }
      pctx.putImageData(px, 0, 0);
      ctx.globalAlpha = S.alpha;
      ctx.imageSmoothingEnabled = S.smooth;
      ctx.drawImage(patch, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
      if (P.mode === 'patch' && P.cam === name) { // the selected patch, outlined
        const bw = canvas.width / pf.grid[1], bh = canvas.height / pf.grid[0];
        ctx.strokeStyle = '#00ffff'; ctx.lineWidth = ZOOM;
        ctx.strokeRect((P.patch % pf.grid[1]) * bw + ZOOM / 2, Math.floor(P.patch / pf.grid[1]) * bh + ZOOM / 2, bw - ZOOM, bh - ZOOM);
      }
      view.cap.replaceChildren(el('span', 'camname', name), document.createTextNode(
        '  max p ' + fmt(own.peak) + '  mass ' + own.mass.toFixed(3)));
    }
    const tok = tokenValues ? ownLevels(tokenValues, 0, T) : null;
    pTokens.forEach((span, k) => {
      const lv = tok ? tok.levels[k] : null;
      span.style.backgroundColor = tok ? rgb(lv) : '';
      span.style.color = tok ? ink(lv) : '';
      span.dataset.level = tok ? String(lv) : '';
      span.classList.toggle('query', P.mode === 'token' && k === P.token);
    });
    Object.assign(PVIEW, { call: i, mode: P.mode, layer: pf.layers[l], token: P.mode === 'token' ? pf.slots[P.token] : null,
                           cam: P.mode === 'patch' ? P.cam : null, patch: P.mode === 'patch' ? P.patch : null,
                           imageValues, tokenValues, levels, tokenLevels: tok ? Array.from(tok.levels) : null });
  }

  // ---------------------------------------------------------------- knockouts (pi0viz knockout results)
  function renderKnockouts() { // tables of text cells formatted by viewer/knockouts.py, and their figures
    const ks = META.knockouts || [];
    if (!ks.length) return;
    $('knockouts-panel').hidden = false;
    const host = $('knockouts');
    ks.forEach((k) => {
      const box = el('div', 'knockout');
      box.dataset.kind = k.kind;
      box.appendChild(el('h3', '', k.title));
      k.info.forEach((line) => box.appendChild(el('p', 'kinfo', line)));
      if (k.rows.length) {
        const table = el('table');
        const head = el('tr');
        k.header.forEach((h) => head.appendChild(el('th', '', h)));
        table.appendChild(head);
        k.rows.forEach((row) => {
          const tr = el('tr');
          row.forEach((cell) => tr.appendChild(el('td', '', cell)));
          table.appendChild(tr);
        });
        box.appendChild(table);
      }
      if (k.figure) {
        const img = el('img');
        img.alt = k.title + ' (figure)';
        img.src = k.figure;
        box.appendChild(img);
      }
      host.appendChild(box);
    });
  }

  // For tests, benchmarks and the console.
  window.pi0viz = {
    state: S, view: VIEW, meta: META,
    set(patch) { Object.assign(S, patch); update(); },
    massGrid: (head) => massGrid(S.call, S.a, head === undefined ? S.head : head),
    episodeMass, visibleRegions: () => visibleRegions(S.call).map((r) => MREG[r][0]),
    loaded: () => Object.keys(loaded),
    prefix: { state: P, view: PVIEW, set(patch) { Object.assign(P, patch); update(); } },
  };

  $('title').textContent = META.title;
  parseHash();
  setupControls();
  $('s-player').addEventListener('input', () => { P.layer = Number($('s-player').value); update(); });
  renderKnockouts();
  update();
})();
