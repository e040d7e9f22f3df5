// cakfx studio page: plain JS and the Web Audio API. State lives in `S` (window.studio.state).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN = document.querySelector('meta[name="cakfx-token"]').content;

const S = {
  effects: {}, weights: [], presets: [], files: [], maxUpload: 0,
  fileId: null, resultId: null, chain: [], base: null,
  job: null, jobSeq: 0, dirty: false,
  ab: "A", buffers: { A: null, B: null }, analysis: { A: null, B: null },
  playing: false, startCtx: 0, startOffset: 0, position: 0,
  loop: { on: false, start: 0, end: 0 }, sourceStarts: 0, batchRow: null,
};
let ctx = null;
const gains = {};
const sources = {};

// ---- API -------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = Object.assign({ "X-Cakfx-Token": TOKEN }, options.headers || {});
  let body = options.body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { method: options.method || "GET", headers, body });
  const type = response.headers.get("content-type") || "";
  if (!response.ok) {
    const message = type.includes("json") ? (await response.json()).error : (await response.text());
    throw new Error(message || `${response.status} ${response.statusText}`);
  }
  return options.raw ? response : type.includes("json") ? response.json() : response.text();
}

function status(text) { $("status").textContent = text; }
function showError(text) { $("error").textContent = text || ""; }

// ---- audio -----------------------------------------------------------------------------

function audioContext() {
  if (!ctx) {
    ctx = new AudioContext();
    for (const k of ["A", "B"]) { gains[k] = ctx.createGain(); gains[k].connect(ctx.destination); }
    applyGains(true);
  }
  return ctx;
}

async function loadBuffer(slot, fileId) {
  // audio and pictures are fetched at once; decoding overlaps the analysis request
  const [buffer, analysis] = await Promise.all([
    api(`/api/files/${fileId}/audio`, { raw: true })
      .then((response) => response.arrayBuffer())
      .then((data) => audioContext().decodeAudioData(data)),
    api(`/api/files/${fileId}/analysis`),
  ]);
  S.buffers[slot] = buffer;
  S.analysis[slot] = analysis;
  if (S.playing) startSources(currentPosition()); // the new buffer joins at the same position
  applyGains(true);
  drawAll();
}

function duration() {
  const b = S.buffers.A || S.buffers.B;
  return b ? b.duration : 0;
}

function matchGainB() {
  // loudness-matched A/B: B is brought to A's loudness so "louder" does not win
  if (!$("loudness-match").checked || !S.analysis.A || !S.analysis.B) return 1;
  const db = Math.max(-24, Math.min(24, S.analysis.A.loudness - S.analysis.B.loudness));
  return Math.pow(10, db / 20);
}

function applyGains(now) {
  if (!ctx) return;
  const target = { A: S.ab === "A" ? 1 : 0, B: S.ab === "B" ? matchGainB() : 0 };
  for (const k of ["A", "B"]) {
    const g = gains[k].gain;
    g.cancelScheduledValues(ctx.currentTime);
    if (now) g.setValueAtTime(target[k], ctx.currentTime);
    else g.setTargetAtTime(target[k], ctx.currentTime, 0.003); // a 3 ms crossfade: no gap, no click
  }
  S.gains = target;
}

function currentPosition() {
  if (!S.playing || !ctx) return S.position;
  let pos = S.startOffset + (ctx.currentTime - S.startCtx);
  const { on, start, end } = S.loop;
  if (on && end > start && pos >= end) pos = start + ((pos - start) % (end - start));
  return Math.min(Math.max(pos, 0), duration());
}

function stopSources() {
  for (const k of ["A", "B"]) {
    if (sources[k]) { sources[k].onended = null; try { sources[k].stop(); } catch (e) { /* not started */ } }
    sources[k] = null;
  }
}

function startSources(offset) {
  // both buffers start on one AudioContext timeline at the same instant and offset;
  // A/B only moves the gains, so the switch lands at the same position without a gap
  const c = audioContext();
  stopSources();
  const { on, start, end } = S.loop;
  const looping = on && end > start;
  if (looping && (offset < start || offset >= end)) offset = start;
  if (!looping && offset >= duration()) offset = 0;
  const t = c.currentTime + 0.03;
  for (const k of ["A", "B"]) {
    if (!S.buffers[k]) continue;
    const src = c.createBufferSource();
    src.buffer = S.buffers[k];
    if (looping) { src.loop = true; src.loopStart = start; src.loopEnd = end; }
    src.connect(gains[k]);
    src.start(t, offset);
    sources[k] = src;
    S.sourceStarts += 1;
  }
  const main = sources.A || sources.B;
  if (main) main.onended = () => { if (S.playing && !looping) { S.playing = false; S.position = 0; updateTransport(); } };
  S.startCtx = t;
  S.startOffset = offset;
  S.playing = true;
}

async function play() {
  if (!S.buffers.A && !S.buffers.B) return;
  const c = audioContext();
  if (c.state !== "running") await c.resume();
  if (S.playing) { S.position = currentPosition(); stopSources(); S.playing = false; }
  else startSources(S.position);
  updateTransport();
  if (S.playing) requestAnimationFrame(tick);
}

function tick() {
  if (!S.playing) return;
  S.position = currentPosition();
  $("position").textContent = `${S.position.toFixed(3)} s`;
  drawWaveform();
  requestAnimationFrame(tick);
}

function setAB(which) {
  if (which === "B" && !S.buffers.B) { status("nothing processed yet: press Process first"); which = "A"; }
  S.ab = which;
  applyGains(false);
  updateTransport();
}

function updateTransport() {
  $("play").textContent = S.playing ? "Pause" : "Play";
  $("ab-state").textContent = S.ab;
  $("ab-state").classList.toggle("b", S.ab === "B");
  $("position").textContent = `${currentPosition().toFixed(3)} s`;
  const a = S.analysis.A, b = S.analysis.B;
  const parts = [];
  if (a) parts.push(`A ${a.loudness.toFixed(1)} ${a.loudness_unit}, peak ${a.peak_db.toFixed(1)} dB`);
  if (b) parts.push(`B ${b.loudness.toFixed(1)} ${b.loudness_unit}, peak ${b.peak_db.toFixed(1)} dB`);
  if (a && b && $("loudness-match").checked) parts.push(`B played ${(20 * Math.log10(matchGainB())).toFixed(1)} dB (matched)`);
  $("levels").textContent = parts.join("   ·   ");
  $("save-audio").disabled = !S.resultId;
}

// ---- drawing ---------------------------------------------------------------------------

function drawAll() { drawWaveform(); drawSpec("spec-before", S.analysis.A); drawSpec("spec-after", S.analysis.B); updateTransport(); }

function drawWaveform() {
  const cv = $("waveform"), g = cv.getContext("2d");
  const w = cv.width, h = cv.height, d = duration();
  g.clearRect(0, 0, w, h);
  if (S.loop.end > S.loop.start && d) {
    g.fillStyle = S.loop.on ? "rgba(240,163,58,0.18)" : "rgba(255,255,255,0.08)";
    g.fillRect(S.loop.start / d * w, 0, (S.loop.end - S.loop.start) / d * w, h);
  }
  for (const [slot, colour] of [["A", "rgba(154,160,171,0.9)"], ["B", "rgba(240,163,58,0.65)"]]) {
    const a = S.analysis[slot];
    if (!a) continue;
    const lo = a.waveform.min, hi = a.waveform.max, n = lo.length;
    g.fillStyle = colour;
    for (let i = 0; i < n; i++) {
      const x = i / n * w, y0 = h / 2 - hi[i] * h / 2, y1 = h / 2 - lo[i] * h / 2;
      g.fillRect(x, y0, Math.max(1, w / n), Math.max(1, y1 - y0));
    }
  }
  if (d) {
    g.fillStyle = "#fff";
    g.fillRect(currentPosition() / d * w, 0, 2, h);
  }
}

function colour(v) { // 0..255 -> a dark-blue/purple/orange/yellow ramp
  const t = v / 255;
  return [Math.round(255 * Math.min(1, Math.max(0, 1.6 * t - 0.2))),
    Math.round(255 * Math.min(1, Math.max(0, 1.8 * t * t))),
    Math.round(255 * Math.min(1, Math.max(0, t < 0.5 ? 0.2 + t : 1.2 - t)))];
}

function drawSpec(id, analysis) {
  const cv = $(id), g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  if (!analysis) return;
  const sp = analysis.spectrogram;
  const bytes = Uint8Array.from(atob(sp.data), (c) => c.charCodeAt(0));
  const img = g.createImageData(sp.columns, sp.bins);
  for (let x = 0; x < sp.columns; x++) {
    for (let b = 0; b < sp.bins; b++) {
      const [r, gr, bl] = colour(bytes[x * sp.bins + b]);
      const o = ((sp.bins - 1 - b) * sp.columns + x) * 4; // low frequencies at the bottom
      img.data[o] = r; img.data[o + 1] = gr; img.data[o + 2] = bl; img.data[o + 3] = 255;
    }
  }
  const off = document.createElement("canvas");
  off.width = sp.columns; off.height = sp.bins;
  off.getContext("2d").putImageData(img, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(off, 0, 0, cv.width, cv.height);
  g.font = "bold 12px sans-serif";
  for (const f of [100, 1000, 10000]) { // frequency ticks (Hz), readable on any colour
    if (f >= sp.f_max) continue;
    const y = cv.height * (1 - Math.log(f / sp.f_min) / Math.log(sp.f_max / sp.f_min));
    const label = f >= 1000 ? `${f / 1000} kHz` : `${f} Hz`;
    g.fillStyle = "rgba(0,0,0,0.6)"; g.fillRect(0, y - 7, g.measureText(label).width + 8, 14);
    g.fillStyle = "#fff"; g.fillText(label, 4, y + 4);
  }
}

function waveformEvents() {
  const cv = $("waveform");
  let down = null;
  const at = (e) => { const r = cv.getBoundingClientRect(); return Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)) * duration(); };
  cv.addEventListener("mousedown", (e) => { down = at(e); });
  cv.addEventListener("mouseup", (e) => {
    if (down === null) return;
    const t = at(e);
    if (Math.abs(t - down) > 0.02 * duration()) {
      S.loop.start = Math.min(t, down); S.loop.end = Math.max(t, down);
      $("loop").checked = true; S.loop.on = true;
      if (S.playing) startSources(S.loop.start); else S.position = S.loop.start;
    } else {
      S.position = t;
      if (S.playing) startSources(t);
    }
    down = null;
    drawWaveform(); updateTransport();
  });
}

// ---- files -----------------------------------------------------------------------------

function renderFiles() {
  const sel = $("file-select");
  sel.innerHTML = "";
  for (const f of S.files) {
    const o = new Option(`${f.name} — ${f.duration.toFixed(2)} s, ${f.sample_rate} Hz, ${f.channels} ch`, f.id);
    o.dataset.testid = `file-${f.name}`;
    sel.add(o);
  }
  if (S.fileId) sel.value = S.fileId;
}

async function selectFile(id) {
  S.fileId = id; S.resultId = null; S.buffers.B = null; S.analysis.B = null;
  if (S.playing) { S.position = currentPosition(); }
  S.loop = { on: $("loop").checked, start: 0, end: 0 };
  renderFiles();
  status("loading…");
  await loadBuffer("A", id);
  if (S.ab === "B") setAB("A");
  status(`loaded ${S.files.find((f) => f.id === id)?.name || ""}`);
  if ($("auto-process").checked && S.chain.length) processNow();
}

async function upload(file) {
  showError("");
  if (S.maxUpload && file.size > S.maxUpload) {
    showError(`upload too large: ${(file.size / 2 ** 20).toFixed(1)} MB is over the studio's limit of ${(S.maxUpload / 2 ** 20).toFixed(0)} MB`);
    return;
  }
  status(`uploading ${file.name}…`);
  try {
    const item = await api(`/api/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
    S.files.push(item);
    await selectFile(item.id);
  } catch (e) { showError(e.message); status("upload refused"); }
}

function dropEvents() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  $("file-input").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); e.target.value = ""; });
  $("file-select").addEventListener("change", (e) => selectFile(e.target.value));
}

// ---- chain builder (controls generated from the registry) --------------------------------

function uniqueId(effect) {
  const base = effect.split(".").pop().toLowerCase().replace(/[^a-z0-9_-]/g, "") || "fx";
  let id = base, n = 2;
  while (S.chain.some((e) => e.id === id)) id = `${base}${n++}`;
  return id;
}

function paramControl(entry, p, index) {
  const wrap = document.createElement("div");
  wrap.className = "param";
  const key = entry.id || String(index + 1);
  const testid = `param-${key}-${p.name}`;
  const label = document.createElement("label");
  label.textContent = p.name; label.title = p.help || p.name;
  wrap.append(label);
  const has = Object.prototype.hasOwnProperty.call(entry.params, p.name);
  const value = has ? entry.params[p.name] : p.default;
  const set = (v) => {
    entry.params[p.name] = v;
    if (p.type === "weights") delete entry.sha256; // the preset's pin was for the weights it named
    changed();
  };
  if ((p.type === "float" || p.type === "int") && p.min !== undefined && p.max !== undefined) {
    const range = document.createElement("input");
    const num = document.createElement("input");
    range.type = "range"; num.type = "number";
    for (const el of [range, num]) { el.min = p.min; el.max = p.max; el.step = p.type === "int" ? 1 : (p.max - p.min) / 200; }
    num.step = "any";
    range.value = value ?? p.min; num.value = value ?? "";
    range.dataset.testid = testid; num.dataset.testid = `${testid}-number`;
    range.title = `${p.help} (default ${p.default}, ${p.min} … ${p.max}; double-click: default)`;
    const parse = (s) => (p.type === "int" ? parseInt(s, 10) : parseFloat(s));
    range.addEventListener("input", () => { num.value = range.value; set(parse(range.value)); });
    range.addEventListener("dblclick", () => { if (p.default !== null) { range.value = num.value = p.default; set(p.default); } });
    num.addEventListener("change", () => { range.value = num.value; set(parse(num.value)); });
    wrap.append(range, num);
  } else if (p.type === "float" || p.type === "int") {
    wrap.classList.add("wide");
    const num = document.createElement("input");
    num.type = "number"; num.step = "any"; num.value = value ?? ""; num.dataset.testid = testid;
    num.addEventListener("change", () => set(p.type === "int" ? parseInt(num.value, 10) : parseFloat(num.value)));
    wrap.append(num);
  } else if (p.type === "bool") {
    wrap.classList.add("wide");
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = !!value; box.dataset.testid = testid;
    box.addEventListener("change", () => set(box.checked));
    wrap.append(box);
  } else if (p.type === "choice" || p.type === "weights") {
    wrap.classList.add("wide");
    const sel = document.createElement("select");
    sel.dataset.testid = testid;
    const options = p.type === "choice" ? [...p.choices] : [...S.weights];
    if (value !== null && value !== undefined && !options.includes(value)) options.push(value);
    if (!has && p.default === null) sel.add(new Option("(choose)", "-1"));
    options.forEach((c, i) => sel.add(new Option(String(c), String(i))));
    sel.value = String(options.indexOf(value));
    sel.addEventListener("change", () => { const i = parseInt(sel.value, 10); if (i >= 0) set(options[i]); });
    wrap.append(sel);
  } else {
    wrap.classList.add("wide");
    const text = document.createElement("input");
    text.dataset.testid = testid;
    text.value = p.type === "table" ? JSON.stringify(value ?? {}) : (value ?? "");
    text.addEventListener("change", () => {
      if (p.type !== "table") return set(text.value);
      try { set(JSON.parse(text.value || "{}")); } catch (e) { showError(`${key}.${p.name}: not a JSON table`); }
    });
    wrap.append(text);
  }
  return wrap;
}

function renderChain() {
  const box = $("chain");
  box.innerHTML = "";
  S.chain.forEach((entry, i) => {
    const spec = S.effects[entry.effect];
    const div = document.createElement("div");
    div.className = "entry"; div.dataset.testid = `entry-${i + 1}`;
    const head = document.createElement("div");
    head.className = "entry-head";
    const title = document.createElement("b");
    title.textContent = `${i + 1}. ${entry.effect}` + (entry.id ? ` [${entry.id}]` : "");
    title.title = spec ? spec.summary : "unknown effect";
    const btn = (text, testid, fn, disabled) => {
      const b = document.createElement("button");
      b.textContent = text; b.dataset.testid = testid; b.disabled = !!disabled;
      b.addEventListener("click", fn); return b;
    };
    head.append(title,
      btn("↑", `entry-up-${i + 1}`, () => move(i, -1), i === 0),
      btn("↓", `entry-down-${i + 1}`, () => move(i, 1), i === S.chain.length - 1),
      btn("✕", `entry-remove-${i + 1}`, () => { S.chain.splice(i, 1); renderChain(); changed(); }));
    div.append(head);
    if (spec) for (const p of spec.params) div.append(paramControl(entry, p, i));
    box.append(div);
  });
}

function move(i, d) {
  const [e] = S.chain.splice(i, 1);
  S.chain.splice(i + d, 0, e);
  renderChain(); changed();
}

let debounce = null;
function changed() {
  showError("");
  S.dirty = true;
  if (!$("auto-process").checked || !S.fileId) return;
  clearTimeout(debounce);
  debounce = setTimeout(processNow, 150);
}

async function loadPreset(name) {
  showError("");
  if (!name) { S.base = null; return; }
  try {
    const p = await api(`/api/presets/${encodeURIComponent(name)}`);
    S.base = name;
    S.chain = p.chain.map((e) => ({ effect: e.effect, id: e.id, params: e.params, sha256: e.sha256 }));
    $("preset-name").value = $("preset-name").value || `${name}-mine`;
    renderChain(); changed();
  } catch (e) { showError(e.message); }
}

// ---- processing ------------------------------------------------------------------------

async function processNow() {
  showError("");
  if (!S.fileId) { showError("load a file first"); return; }
  if (S.job) api(`/api/jobs/${S.job}/cancel`, { method: "POST" }).catch(() => {});
  const seq = ++S.jobSeq;
  const chain = S.chain.map((e) => ({ effect: e.effect, id: e.id, params: e.params, ...(e.sha256 ? { sha256: e.sha256 } : {}) }));
  let job;
  try {
    job = await api("/api/process", { method: "POST", json: { file: S.fileId, chain, preset: S.base } });
  } catch (e) {
    if (seq === S.jobSeq) { S.job = null; showError(e.message); status("not processed"); }
    return;
  }
  S.job = job.id;
  $("cancel").disabled = false;
  const started = performance.now();
  while (seq === S.jobSeq) {
    job = await api(`/api/jobs/${job.id}`);
    $("progress").value = job.progress;
    $("job-stage").textContent = `${job.stage} · ${((performance.now() - started) / 1000).toFixed(1)} s`;
    if (!["queued", "running"].includes(job.state)) break;
    await new Promise((r) => setTimeout(r, 60));
  }
  if (seq !== S.jobSeq) return; // a newer request took over
  $("cancel").disabled = true;
  if (job.state === "done") {
    await loadBuffer("B", job.result);
    if (seq !== S.jobSeq) return;
    S.resultId = job.result; // only once B holds it: what is saved is what was heard
    S.job = null;
    S.dirty = false;
    S.lastRoundTrip = (performance.now() - started) / 1000;
    status(`processed in ${job.seconds.toFixed(2)} s (round trip ${S.lastRoundTrip.toFixed(2)} s)`);
  } else if (job.state === "failed") { S.job = null; showError(job.error); status("processing failed"); }
  else { S.job = null; status("cancelled"); }
  updateTransport();
}

async function cancelJob() {
  if (!S.job) return;
  const id = S.job;
  await api(`/api/jobs/${id}/cancel`, { method: "POST" });
  status("cancelling…");
}

// ---- save ------------------------------------------------------------------------------

function saveAudio() {
  if (!S.resultId) return;
  const a = document.createElement("a");
  a.href = `/api/files/${S.resultId}/download?format=${$("save-format").value}&token=${encodeURIComponent(TOKEN)}`;
  a.download = "";
  document.body.append(a); a.click(); a.remove();
  $("save-message").textContent = "audio saved (see your downloads)";
}

async function savePreset() {
  const name = $("preset-name").value.trim();
  const chain = S.chain.map((e) => ({ effect: e.effect, id: e.id, params: e.params }));
  try {
    const r = await api("/api/presets", { method: "POST", json: {
      name, description: $("preset-description").value, chain, preset: S.base, overwrite: $("preset-overwrite").checked } });
    $("save-message").textContent = `saved preset ${r.name}: ${r.path} — use it with: cakfx process FILES -p ${r.name} -o OUT`;
    await loadPresets(r.name);
    S.base = r.name;
  } catch (e) { $("save-message").textContent = ""; showError(e.message); }
}

async function loadPresets(selected) {
  S.presets = await api("/api/presets");
  const sel = $("preset-select");
  sel.innerHTML = "";
  sel.add(new Option("(build a chain)", ""));
  for (const p of S.presets) sel.add(new Option(`${p.name} (${p.source})`, p.name));
  sel.value = selected || "";
}

// ---- batch -----------------------------------------------------------------------------

function renderBatch(batch) {
  if (!batch || !batch.files.length) return;
  $("batch-panel").hidden = false;
  $("batch-title").textContent = `${batch.report}${batch.preset ? ` — preset ${batch.preset}` : ""}`;
  const body = $("batch-list").querySelector("tbody");
  body.innerHTML = "";
  for (const row of batch.files) {
    const tr = document.createElement("tr");
    tr.dataset.testid = `batch-row-${row.index}`;
    const name = document.createElement("td"); name.textContent = row.name.split("/").slice(-2).join("/"); name.title = row.name;
    const st = document.createElement("td"); st.textContent = row.status; st.className = `status-${row.status}`; st.title = row.reason;
    const act = document.createElement("td");
    const b = document.createElement("button");
    b.textContent = "A/B"; b.dataset.testid = `batch-ab-${row.index}`;
    b.disabled = !row.input || !row.output;
    b.title = b.disabled ? (row.reason || "no output to compare") : "listen: input (A) against output (B)";
    b.addEventListener("click", () => listenBatch(row, tr));
    act.append(b);
    tr.append(name, st, act);
    body.append(tr);
  }
}

async function listenBatch(row, tr) {
  for (const r of $("batch-list").querySelectorAll("tr")) r.classList.remove("active");
  tr.classList.add("active");
  S.batchRow = row.index;
  S.fileId = row.input; S.resultId = row.output;
  status("loading batch pair…");
  await loadBuffer("A", row.input);
  await loadBuffer("B", row.output);
  status(`batch file ${row.index}: A = input, B = output`);
}

// ---- start -----------------------------------------------------------------------------

function keys() {
  document.addEventListener("keydown", (e) => {
    if (["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName) && document.activeElement.type !== "range" && document.activeElement.type !== "checkbox") return;
    if (e.code === "Space") { e.preventDefault(); play(); }
    else if (e.key === "a" || e.key === "A") setAB("A");
    else if (e.key === "b" || e.key === "B") setAB("B");
    else if (e.key === "x" || e.key === "X") setAB(S.ab === "A" ? "B" : "A");
  });
}

async function start() {
  dropEvents(); waveformEvents(); keys();
  $("play").addEventListener("click", play);
  $("ab-toggle").addEventListener("click", () => setAB(S.ab === "A" ? "B" : "A"));
  $("loudness-match").addEventListener("change", () => { applyGains(false); updateTransport(); });
  $("loop").addEventListener("change", () => { S.loop.on = $("loop").checked; if (S.playing) startSources(currentPosition()); drawWaveform(); });
  $("process").addEventListener("click", processNow);
  $("cancel").addEventListener("click", cancelJob);
  $("preset-select").addEventListener("change", (e) => loadPreset(e.target.value));
  $("add-effect").addEventListener("click", () => {
    const name = $("add-effect-select").value;
    S.chain.push({ effect: name, id: uniqueId(name), params: {} });
    renderChain(); changed();
  });
  $("save-audio").addEventListener("click", saveAudio);
  $("save-preset").addEventListener("click", savePreset);
  try {
    const [info, fx] = await Promise.all([api("/api/info"), api("/api/effects")]);
    S.maxUpload = info.max_upload;
    S.weights = fx.weights;
    for (const e of fx.effects) S.effects[e.name] = e;
    for (const e of fx.effects) $("add-effect-select").add(new Option(e.name, e.name));
    await loadPresets();
    S.files = info.files;
    renderFiles();
    renderBatch(info.batch);
    status("ready: load a file, choose a preset or add effects");
    if (S.files.length) await selectFile(S.files[0].id);
    S.ready = true;
  } catch (e) { showError(e.message); status("could not start"); }
  updateTransport();
}

window.studio = { state: S, play, setAB, processNow, currentPosition, sources, gains };
start();
