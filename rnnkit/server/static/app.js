// The rnnkit page: four views over the JSON API (the API itself is described at /docs).
"use strict";

// -- helpers ---------------------------------------------------------------------------------------------
async function errorMessage(response) {
  let data = null;
  try { data = await response.json(); } catch (_) { return `${response.status} ${response.statusText}`; }
  const detail = typeof data.detail === "string" ? data.detail
    : (data.detail || []).map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  return `${response.status}: ${detail}`;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method, headers: body ? {"Content-Type": "application/json"} : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

// POST a body and read the answer as server-sent events: onEvent(name, data) per event.
async function postEvents(path, body, onEvent) {
  const response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
  if (!response.ok) throw new Error(await errorMessage(response));
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

function formValues(form) {
  const values = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") values[el.name] = el.checked;
    else if (el.type === "number") values[el.name] = Number(el.value);
    else values[el.name] = el.value;
  }
  return values;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                                      '"': "&quot;", "'": "&#39;"}[c]));
const fmt = (x, digits = 4) => (typeof x === "number" ? (Number.isInteger(x) ? x.toLocaleString("en")
                                                                             : x.toPrecision(digits)) : String(x));
const SUBSCRIPTS = "₀₁₂₃₄₅₆₇₈₉";
const subscript = (n) => String(n).split("").map((d) => SUBSCRIPTS[Number(d)]).join("");

let LIMITS = {};

// -- tabs ------------------------------------------------------------------------------------------------
function showView(name) {
  document.querySelectorAll("nav .tab").forEach((t) => t.classList.toggle("active", t.dataset.view === name));
  document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.id === name));
  // plots drawn while their view was hidden have no width yet
  document.querySelectorAll(`#${name} .js-plotly-plot`).forEach((plot) => Plotly.Plots.resize(plot));
}
document.querySelectorAll("nav .tab").forEach((tab) => tab.addEventListener("click", () => showView(tab.dataset.view)));

// -- architecture explorer -------------------------------------------------------------------------------
const CELL_NAMES = {rnn: "RNN", lstm: "LSTM", gru: "GRU"};

// The unrolled network as SVG: rows are layer-directions (input at the bottom, output at the top), columns
// time steps. A bidirectional layer has a forward row (→) above a backward row (←); both read the layer's
// input, and their states are concatenated into its output (the dot).
function diagramSvg(v, tokens) {
  const cols = Math.min(tokens.length, 5), more = tokens.length > cols;
  const dirs = v.bidirectional ? 2 : 1, n = v.hidden_size;
  const left = 200, colW = 112, boxW = 64, boxH = 28, rowH = 52;
  const rows = [{kind: "output"}];
  for (let l = v.num_layers - 1; l >= 0; l--) {
    rows.push({kind: "layer", l, dir: 0});
    if (dirs === 2) rows.push({kind: "layer", l, dir: 1});
  }
  rows.push({kind: "input"});
  const nCols = cols + (more ? 1 : 0);
  const width = left + nCols * colW + 30, height = rows.length * rowH + 8;
  const cx = (j) => left + j * colW + colW / 2, cy = (r) => 4 + r * rowH + rowH / 2;
  const parts = [];
  const path = (points, arrow = true, cls = "flow") => parts.push(
    `<polyline class="${cls}" points="${points.map((p) => p.join(",")).join(" ")}"` +
    (arrow ? ' marker-end="url(#arrow)"' : "") + "/>");
  const label = (x, y, text, cls = "label", anchor = "start") =>
    parts.push(`<text class="${cls}" x="${x}" y="${y}" text-anchor="${anchor}">${escapeHtml(text)}</text>`);
  const box = (x, y, text, cls) => {
    parts.push(`<rect class="${cls}" x="${x - boxW / 2}" y="${y - boxH / 2}" width="${boxW}" height="${boxH}" rx="5"/>`);
    label(x, y + 4, text, "box-text", "middle");
  };
  const state = v.cell === "lstm" ? "h, c" : "h";
  const levelRows = [];  // per level from the bottom: the row indices of its boxes, upper (forward) first
  levelRows.push([rows.length - 1]);
  for (let l = 0; l < v.num_layers; l++) {
    levelRows.push(rows.map((row, r) => (row.kind === "layer" && row.l === l ? r : -1)).filter((r) => r >= 0));
  }
  levelRows.push([0]);
  for (let j = 0; j < cols; j++) {
    const x = cx(j);
    for (let k = 1; k < levelRows.length; k++) {
      const below = levelRows[k - 1], above = levelRows[k];
      // where the level below hands on its output: its box top, or the merge point above a bidirectional pair
      const fromY = below.length === 2 ? cy(below[0]) - rowH / 2 : cy(below[0]) - boxH / 2;
      if (above.length === 1) {
        path([[x, fromY], [x, cy(above[0]) + boxH / 2]]);
      } else {
        const [forward, backward] = above, gap = cy(backward) - rowH / 2;
        path([[x, fromY], [x, cy(backward) + boxH / 2]]);  // into the backward direction
        path([[x, fromY - 4], [x - 44, fromY - 4], [x - 44, gap], [x, gap], [x, cy(forward) + boxH / 2]]);
        path([[x, cy(forward) - boxH / 2], [x, cy(forward) - rowH / 2]], false);  // forward state up
        path([[x + 16, cy(backward) - boxH / 2], [x + 16, gap + 4], [x + 44, gap + 4],
              [x + 44, cy(forward) - rowH / 2], [x, cy(forward) - rowH / 2]], false);  // backward state up
        parts.push(`<circle class="merge" cx="${x}" cy="${cy(forward) - rowH / 2}" r="3.5"/>`);
      }
    }
  }
  rows.forEach((row, r) => {
    const y = cy(r);
    if (row.kind === "input") label(8, y + 4, `input: character → x_t (d = ${v.input_size})`);
    if (row.kind === "output") label(8, y + 4, `output h_t (${dirs === 2 ? `[h→; h←], 2n = ${2 * n}` : `n = ${n}`})`);
    if (row.kind === "layer") {
      const d = row.l === 0 ? v.input_size : n * dirs;
      label(8, y - 3, `layer ${row.l} ${row.dir ? "backward ←" : dirs === 2 ? "forward →" : ""}`);
      label(8, y + 12, `reads d = ${d}, keeps n = ${n}`, "label small");
      for (let j = 0; j + 1 < nCols; j++) {  // the recurrence: h_{t-1} -> h_t (backward: h_{t+1} -> h_t)
        const a = cx(j) + boxW / 2, b = cx(j + 1) - boxW / 2;
        path(row.dir ? [[b, y], [a, y]] : [[a, y], [b, y]], true, "recurrence");
        label((a + b) / 2, y - 6, state, "label small", "middle");
      }
      if (!row.dir) { path([[cx(0) - boxW / 2 - 26, y], [cx(0) - boxW / 2, y]], true, "recurrence");
                      label(cx(0) - boxW / 2 - 30, y + 4, "0", "label small", "end"); }
      if (row.dir && !more) { path([[cx(cols - 1) + boxW / 2 + 26, y], [cx(cols - 1) + boxW / 2, y]], true, "recurrence");
                              label(cx(cols - 1) + boxW / 2 + 30, y + 4, "0", "label small"); }
    }
    for (let j = 0; j < cols; j++) {
      if (row.kind === "input") box(cx(j), y, `“${tokenLabel(tokens[j])}”`, "input-box");
      else if (row.kind === "output") box(cx(j), y, `h${subscript(j + 1)}`, "output-box");
      else box(cx(j), y, CELL_NAMES[v.cell] + (v.layer_norm ? "+LN" : ""), row.dir ? "cell-box backward" : "cell-box");
    }
    if (more) label(cx(cols), y + 5, "…", "label", "middle");
  });
  return `<svg width="100%" viewBox="0 0 ${width} ${height}" style="max-width: ${width}px">` +
    '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" ' +
    'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>' + parts.join("") + "</svg>";
}

function equationsHtml(v) {
  const ln = v.layer_norm;
  const pre = (gate) => ln ? `LN(W<sub>i${gate}</sub>x<sub>t</sub>) + LN(W<sub>h${gate}</sub>h<sub>t−1</sub>) + b<sub>${gate}</sub>`
                           : `W<sub>i${gate}</sub>x<sub>t</sub> + W<sub>h${gate}</sub>h<sub>t−1</sub> + b<sub>${gate}</sub>`;
  let lines;
  if (v.cell === "rnn") {
    lines = ["h<sub>t</sub> = tanh(W<sub>ih</sub>x<sub>t</sub> + W<sub>hh</sub>h<sub>t−1</sub> + b)"];
  } else if (v.cell === "lstm") {
    lines = [`i<sub>t</sub> = σ(${pre("i")})  input gate`, `f<sub>t</sub> = σ(${pre("f")})  forget gate`,
             `o<sub>t</sub> = σ(${pre("o")})  output gate`, `g<sub>t</sub> = tanh(${pre("g")})  candidate`,
             "c<sub>t</sub> = f<sub>t</sub> ⊙ c<sub>t−1</sub> + i<sub>t</sub> ⊙ g<sub>t</sub>",
             `h<sub>t</sub> = o<sub>t</sub> ⊙ tanh(${ln ? "LN(c<sub>t</sub>)" : "c<sub>t</sub>"})`];
  } else {
    const candidate = v.reset_after
      ? "n<sub>t</sub> = tanh(W<sub>in</sub>x<sub>t</sub> + b<sub>in</sub> + r<sub>t</sub> ⊙ (W<sub>hn</sub>h<sub>t−1</sub> + b<sub>hn</sub>))  reset after (torch)"
      : "n<sub>t</sub> = tanh(W<sub>in</sub>x<sub>t</sub> + W<sub>hn</sub>(r<sub>t</sub> ⊙ h<sub>t−1</sub>) + b<sub>n</sub>)  reset before (Cho et al. 2014)";
    lines = [`r<sub>t</sub> = σ(${pre("r")})  reset gate`, `z<sub>t</sub> = σ(${pre("z")})  update gate`, candidate,
             "h<sub>t</sub> = (1 − z<sub>t</sub>) ⊙ n<sub>t</sub> + z<sub>t</sub> ⊙ h<sub>t−1</sub>"];
  }
  return lines.map((line) => `<div>${line}</div>`).join("") +
    (ln ? '<div class="note">LN: layer normalisation with a learned gain (Ba et al. 2016)</div>' : "");
}

function parameterTable(p, v) {
  const gates = {rnn: 1, gru: 3, lstm: 4}[v.cell];
  const extra = v.layer_norm ? ` + ${v.cell === "lstm" ? 10 : 6}n layer norm` : "";
  const rows = p.layers.map((r) => `<tr><td class="name">${escapeHtml(r.component.replace("_reverse", " ←"))}</td>` +
    `<td>${r.input_size}</td><td class="formula">${escapeHtml(r.formula_text)} = ${fmt(r.formula)}</td>` +
    `<td>${fmt(r.torch_formula)}</td><td>${fmt(r.actual)}</td>` +
    `<td class="${r.actual === r.torch_formula ? "ok" : "bad"}">${r.actual === r.torch_formula ? "✓" : "✗"}</td></tr>`);
  return `<tr><th>layer-direction</th><th>d</th><th>formula G[n(d+n)+n], G = ${gates}</th>` +
    `<th>+ second bias${extra}</th><th>model</th><th></th></tr>` + rows.join("") +
    `<tr class="total"><td class="name">total</td><td></td><td id="param-formula">${p.formula}</td>` +
    `<td id="param-formula-torch">${p.formula_torch}</td><td id="param-model">${p.model}</td>` +
    `<td class="${p.model === p.formula_torch ? "ok" : "bad"}">${p.model === p.formula_torch ? "✓" : "✗"}</td></tr>`;
}

let exploreRequest = 0, explored = null;

function explorerValues() {
  const v = formValues(document.getElementById("explore-form"));
  v.reset_after = v.reset_after === "true";
  return v;
}

function syncExplorerControls() {
  const form = document.getElementById("explore-form"), cell = form.elements.cell.value;
  document.getElementById("gru-variant").classList.toggle("disabled", cell !== "gru");
  form.elements.reset_after.disabled = cell !== "gru";
}

async function runExplorer(event) {
  if (event) event.preventDefault();
  syncExplorerControls();
  const v = explorerValues();
  const number = ++exploreRequest;  // answers to older requests are dropped
  const error = document.getElementById("explore-error");
  let r;
  try {
    r = await api("POST", "/api/explore", v);
  } catch (err) {
    if (number === exploreRequest) error.textContent = err.message;
    return;
  }
  if (number !== exploreRequest) return;
  error.textContent = "";
  explored = {v, r};
  document.getElementById("diagram").innerHTML = diagramSvg(v, r.tokens);
  document.getElementById("equations").innerHTML = equationsHtml(v);
  document.getElementById("param-table").innerHTML = parameterTable(r.parameters, v);
  document.getElementById("param-note").textContent = r.parameters.note;
  const norms = r.layers.map((layer, k) => ({name: `||h_t|| ${layer.name}`, y: layer.hidden_norm,
                                             color: PALETTE[k % PALETTE.length]}));
  r.layers.forEach((layer, k) => { if (layer.cell_norm) norms.push({name: `||c_t|| ${layer.name}`, y: layer.cell_norm,
                                                                     color: PALETTE[k % PALETTE.length], dash: "dot"}); });
  lineChart(document.getElementById("norm-plot"), norms, {
    title: "State norms per step", xTitle: "character read at step t", yTitle: "norm", xLabels: r.tokens, legend: true});
  const width = r.hidden[0].length;
  heatmap(document.getElementById("hidden-heatmap"), transpose(r.hidden), {
    title: `Hidden state h_t of the last layer${v.bidirectional ? " ([h→; h←]: units 0–" + (width / 2 - 1) + " forward)" : ""}`,
    rowLabels: r.hidden[0].map((_, u) => String(u)), colLabels: r.tokens, xTitle: "character", yTitle: "unit",
    zmin: -1, zmax: 1, colorscale: "RdBu", colorbarTitle: "h"});
  const select = document.getElementById("gate-layer"), chosen = select.value;
  select.innerHTML = "";
  r.layers.forEach((layer, k) => select.append(new Option(layer.name, String(k))));
  if (chosen && Number(chosen) < r.layers.length) select.value = chosen;
  drawGates();
}

function drawGates() {
  const container = document.getElementById("gate-heatmaps");
  if (!explored) return;
  const {r} = explored, layer = r.layers[Number(document.getElementById("gate-layer").value || 0)];
  document.getElementById("gate-controls").classList.toggle("hidden", !Object.keys(layer.gates).length);
  container.innerHTML = "";
  if (!Object.keys(layer.gates).length) {
    container.append(el("p", {class: "note", text: "A vanilla RNN has no gates: h_t = tanh(W x_t + U h_{t−1} + b)."}));
    return;
  }
  for (const [name, values] of Object.entries(layer.gates)) {
    const div = el("div", {class: "plot gate-heatmap", "data-gate": name});
    container.append(div);
    heatmap(div, transpose(values), {
      title: `${name.replace("_", " ")} — ${layer.name}`, rowLabels: values[0].map((_, u) => String(u)),
      colLabels: r.tokens, xTitle: "character", yTitle: "unit", zmin: 0, zmax: 1, colorbarTitle: "open"});
  }
}

let exploreTimer = null;
const explorerForm = document.getElementById("explore-form");
explorerForm.addEventListener("submit", runExplorer);
explorerForm.addEventListener("input", () => { clearTimeout(exploreTimer); exploreTimer = setTimeout(runExplorer, 350); });
document.getElementById("gate-layer").addEventListener("change", drawGates);

// -- training dynamics -----------------------------------------------------------------------------------
const jobs = [];  // {id, cell, experiment, steps, seqLen, losses: [[step, loss]], grads, status, source}
let queue = [], currentJob = null, redrawPending = false;
// The loss of always predicting the target's mean, i.e. of a network that remembers nothing:
// Var(u_a + u_b) = 2/12 for the adding problem, Var(u_1) = 1/12 for recalling u_1 (u ~ U(0, 1)).
const NO_MEMORY_LOSS = {adding: 1 / 6, vanishing: 1 / 12};

function redrawDynamics() {
  redrawPending = false;
  const dashes = ["solid", "dash", "dot", "dashdot"];
  const style = (job) => ({color: CELL_COLOURS[job.cell], dash: dashes[jobs.filter((j) => j.cell === job.cell).indexOf(job) % 4]});
  const name = (job) => `#${job.id} ${job.cell.toUpperCase()} · ${job.experiment}, T = ${job.seqLen}`;
  const losses = jobs.map((job) => ({name: name(job), x: job.losses.map((p) => p[0]), y: job.losses.map((p) => p[1]),
                                    mode: "lines", ...style(job)}));
  const experiments = [...new Set(jobs.map((job) => job.experiment))];
  const maxStep = Math.max(1, ...jobs.map((job) => job.losses.length));
  experiments.forEach((experiment) => losses.push({name: `no memory (predict the mean), ${experiment}`,
    x: [1, maxStep], y: [NO_MEMORY_LOSS[experiment], NO_MEMORY_LOSS[experiment]], mode: "lines",
    color: "#888", dash: "dot"}));
  lineChart(document.getElementById("loss-plot"), losses, {
    title: "Training loss (mean squared error) per training step", xTitle: "training step", yTitle: "MSE (log scale)",
    logY: true, legend: true});
  const grads = jobs.filter((job) => job.grads).map((job) => ({name: name(job) + ` (step ${job.losses.length})`,
    y: job.grads, mode: "lines+markers", ...style(job)}));
  lineChart(document.getElementById("grad-plot"), grads, {
    title: "||dL/dh_t||: the gradient reaching each time step (latest training step of each job)",
    xTitle: "time step t (the target is read at t = T)", yTitle: "||dL/dh_t|| (log scale)", logY: true, legend: true});
  const rows = jobs.map((job) => `<tr><td>#${job.id}</td><td style="color:${CELL_COLOURS[job.cell]}">${job.cell.toUpperCase()}</td>` +
    `<td>${job.experiment}</td><td>${job.seqLen}</td><td class="job-state">${job.status}</td><td>${job.losses.length} / ${job.steps}</td>` +
    `<td>${job.losses.length ? job.losses[job.losses.length - 1][1].toFixed(4) : ""}</td></tr>`);
  document.getElementById("job-table").innerHTML = jobs.length
    ? "<tr><th>job</th><th>cell</th><th>experiment</th><th>T</th><th>status</th><th>steps</th><th>loss</th></tr>" + rows.join("") : "";
}

function scheduleRedraw() {
  if (!redrawPending) { redrawPending = true; requestAnimationFrame(redrawDynamics); }
}

async function startJob(cell) {
  const v = formValues(document.getElementById("job-form"));
  v.cell = cell || v.cell;
  const status = document.getElementById("job-status"), error = document.getElementById("job-error");
  error.textContent = "";
  let described;
  try {
    described = await api("POST", "/api/jobs", v);
  } catch (err) {
    error.textContent = err.message;
    queue = [];
    return;
  }
  const job = {id: described.id, cell: v.cell, experiment: v.experiment, steps: v.steps, seqLen: v.seq_len,
               losses: [], grads: null, status: "running"};
  jobs.push(job);
  currentJob = job;
  document.getElementById("job-cancel").disabled = false;
  status.textContent = `job ${job.id}: running`;
  const source = new EventSource(`/api/jobs/${job.id}/events`);
  source.onmessage = (message) => {
    const e = JSON.parse(message.data);
    // after a dropped connection EventSource reconnects and the server replays the job from its first step
    if (job.losses.length && e.step <= job.losses[job.losses.length - 1][0]) return;
    job.losses.push([e.step, e.loss]);
    job.grads = e.grad_norms;  // ||dL/dh_t|| of the latest training step
    status.textContent = `job ${job.id} (${job.cell.toUpperCase()}): step ${e.step}/${job.steps}, loss ${e.loss.toFixed(4)}`;
    scheduleRedraw();
  };
  source.addEventListener("end", (message) => {
    const d = JSON.parse(message.data);
    source.close();
    job.status = d.status;
    status.textContent = `job ${job.id} (${job.cell.toUpperCase()}): ${d.status} after ${job.losses.length} steps` +
      (d.error ? ` (${d.error})` : "");
    scheduleRedraw();
    if (currentJob === job) {
      document.getElementById("job-cancel").disabled = true;
      currentJob = null;
      if (queue.length && d.status === "finished") startJob(queue.shift());
    }
  });
  scheduleRedraw();
}

document.getElementById("job-form").addEventListener("submit", (event) => { event.preventDefault(); queue = []; startJob(); });
document.getElementById("job-compare").addEventListener("click", () => { queue = ["lstm", "gru"]; startJob("rnn"); });
document.getElementById("job-cancel").addEventListener("click", async () => {
  queue = [];
  if (currentJob) {
    try { await api("DELETE", `/api/jobs/${currentJob.id}`); } catch (err) {
      document.getElementById("job-error").textContent = err.message;
    }
  }
});

// -- translation demo ------------------------------------------------------------------------------------
let hypotheses = [];
const DATE_EXAMPLES = ["14 March 2021", "Tuesday, 5 May 1998", "3 juin 2020", "Mittwoch, 1. Februar 2034",
                       "7 de jan. de 2051", "12/31/99"];

function chooseHypothesis(k) {
  document.querySelectorAll("#nbest tr.hypothesis").forEach((tr, i) => tr.classList.toggle("chosen", i === k));
  const h = hypotheses[k], plot = document.getElementById("attention-heatmap");
  if (!h) return;
  if (!h.attention) { plot.innerHTML = '<p class="note">This model has no attention.</p>'; return; }
  heatmap(plot, h.attention, {
    title: `Attention of hypothesis ${k + 1}: “${h.text}”`, rowLabels: h.tokens, colLabels: h.source_tokens,
    xTitle: "source token", yTitle: "output token", zmin: 0, zmax: 1, colorscale: WHITE_BLUE, colorbarTitle: "weight"});
}

async function runTranslate(event) {
  if (event) event.preventDefault();
  const v = formValues(document.getElementById("translate-form"));
  if (!v.model) delete v.model;
  const error = document.getElementById("translate-error");
  error.textContent = "";
  try {
    const r = await api("POST", "/api/translate", v);
    hypotheses = r.hypotheses;
    const table = document.getElementById("nbest");
    table.innerHTML = "<tr><th>#</th><th>translation</th><th>score</th><th>log p</th><th>tokens</th></tr>";
    hypotheses.forEach((h, k) => {
      const tr = el("tr", {class: "hypothesis", title: "show the attention of this hypothesis"},
        el("td", {text: String(k + 1)}), el("td", {class: "hyp-text", text: h.text}),
        el("td", {class: "score", text: h.score.toFixed(3)}), el("td", {class: "score", text: h.log_prob.toFixed(3)}),
        el("td", {text: String(h.tokens.length)}));
      tr.addEventListener("click", () => chooseHypothesis(k));
      table.append(tr);
    });
    chooseHypothesis(0);
  } catch (err) {
    error.textContent = err.message;
  }
}
document.getElementById("translate-form").addEventListener("submit", runTranslate);

function setupTranslate(runs) {
  const translateRuns = runs.filter((r) => r.task === "translate");
  const select = document.getElementById("translate-model");
  select.innerHTML = "";
  translateRuns.forEach((r) => select.append(new Option(`${r.name} (${r.config.data || "translate"})`, r.name)));
  document.getElementById("translate-empty").classList.toggle("hidden", translateRuns.length > 0);
  document.getElementById("translate-form").classList.toggle("hidden", translateRuns.length === 0);
  const examples = document.getElementById("translate-examples");
  examples.innerHTML = "";
  if (translateRuns.some((r) => String(r.config.data || "").startsWith("dates"))) {
    examples.append("Try: ");
    DATE_EXAMPLES.forEach((text) => {
      const chip = el("button", {type: "button", class: "chip", text});
      chip.addEventListener("click", () => { document.getElementById("translate-text").value = text; runTranslate(); });
      examples.append(chip);
    });
  }
}

// -- runs ------------------------------------------------------------------------------------------------
function keyValueTable(object) {
  return "<table class=\"kv\">" + Object.entries(object).map(([k, v]) =>
    `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(typeof v === "object" ? JSON.stringify(v) : fmt(v))}</td></tr>`).join("") +
    "</table>";
}

function fileUrl(run, file) {
  return `/api/runs/${encodeURIComponent(run.name)}/files/${file.split("/").map(encodeURIComponent).join("/")}`;
}

function drawRunCurves(div, run) {
  const train = run.records.filter((r) => r.event === "train" && typeof r.loss === "number");
  const evals = run.records.filter((r) => r.event === "eval" && r.metrics);
  const series = [];
  if (train.length) series.push({name: "training loss", x: train.map((r) => r.step), y: train.map((r) => r.loss), mode: "lines"});
  if (evals.some((e) => typeof e.metrics.loss === "number")) {
    series.push({name: "validation loss", x: evals.map((e) => e.step), y: evals.map((e) => e.metrics.loss),
                 mode: "lines+markers"});
  }
  if (!series.length) { div.textContent = "No training records in metrics.jsonl."; return; }
  lineChart(div, series, {title: "Loss during training", xTitle: "training step", yTitle: "loss (nats per token)",
                          logY: true, legend: true, height: 260});
}

function tryPanel(run) {
  const panel = el("div", {class: "try"});
  if (run.task === "lm") {
    panel.innerHTML = `<h4>Generate (streamed token by token)</h4>
      <form class="controls slim generate-form" novalidate>
        <label class="wide">Prompt <input type="text" name="prompt" value="${run.config.level === "word" ? "the" : "ROMEO:"}"></label>
        <label>Tokens <input type="number" name="length" value="200" min="1"></label>
        <label>Temperature <input type="number" name="temperature" value="0.8" min="0" step="0.1"></label>
        <label>top-k <input type="number" name="top_k" value="0" min="0" title="0: no top-k filter"></label>
        <button type="submit" class="generate-run">Generate</button>
      </form><div class="error" role="alert"></div><pre class="generated"></pre>`;
    const form = panel.querySelector("form"), out = panel.querySelector(".generated"), error = panel.querySelector(".error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const v = formValues(form);
      const body = {model: run.name, prompt: v.prompt, length: v.length, temperature: v.temperature,
                    top_k: v.top_k > 0 ? v.top_k : null};
      error.textContent = "";
      out.textContent = v.prompt;
      out.dataset.tokens = "0";
      out.classList.add("streaming");
      try {
        await postEvents("/api/generate/stream", body, (name, data) => {
          if (name === "token") { out.textContent += data.text; out.dataset.tokens = String(Number(out.dataset.tokens) + 1); }
          if (name === "error") error.textContent = data.error;
        });
      } catch (err) {
        error.textContent = err.message;
      }
      out.classList.remove("streaming");
    });
  } else if (run.task === "classify" || run.task === "tag") {
    panel.innerHTML = `<h4>${run.task === "classify" ? "Classify: one text per line" : "Tag: one sentence per line, tokens separated by spaces"}</h4>
      <form class="controls slim predict-form" novalidate><textarea name="lines" rows="3" cols="70"></textarea>
      <button type="submit">${run.task === "classify" ? "Classify" : "Tag"}</button></form>
      <div class="error" role="alert"></div><table class="predictions"></table>`;
    const form = panel.querySelector("form"), error = panel.querySelector(".error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const lines = form.elements.lines.value.split("\n").filter((line) => line.trim());
      error.textContent = "";
      try {
        const r = await api("POST", `/api/${run.task}`, {model: run.name, lines});
        panel.querySelector(".predictions").innerHTML = lines.map((line, k) => `<tr><td>${escapeHtml(line)}</td>` +
          `<td><b>${escapeHtml(Array.isArray(r.predictions[k]) ? r.predictions[k].join(" ") : r.predictions[k])}</b></td></tr>`).join("");
      } catch (err) { error.textContent = err.message; }
    });
  } else if (run.task === "translate") {
    const button = el("button", {type: "button", text: "Open in the translation demo"});
    button.addEventListener("click", () => { document.getElementById("translate-model").value = run.name; showView("translate"); });
    panel.append(el("h4", {text: "Translate"}), button);
  }
  return panel;
}

const DIAGNOSE_HINTS = {lm: "a text of at least two tokens", classify: "a text (target: a label, default the predicted one)",
                        tag: "a sentence, tokens separated by spaces (target: one tag per token)",
                        translate: "a source sentence (target: a translation, default the greedy one)"};

function diagnosePanel(run, defaultText) {
  const panel = el("div", {class: "diagnose"});
  if (!DIAGNOSE_HINTS[run.task]) return panel;
  panel.innerHTML = `<h4>Diagnostics of one input: gradient through time, state norms, gates, attention</h4>
    <form class="controls slim diagnose-form" novalidate>
      <label class="wide" title="${DIAGNOSE_HINTS[run.task]}">Input <input type="text" name="text" value="${escapeHtml(defaultText)}"></label>
      ${run.task === "lm" ? "" : '<label>Target <input type="text" name="target" size="28" placeholder="default: the model\'s own prediction"></label>'}
      <button type="submit" class="diagnose-run">Diagnose</button>
    </form><div class="error" role="alert"></div><div class="diagnose-summary"></div>
    <div class="diagnose-curves"></div>
    <div class="controls slim diagnose-gate-controls hidden"><label>Gate <select class="diagnose-gate"></select></label>
      <label>of <select class="diagnose-layer"></select></label>
      <span class="note">mean activation per unit: 0 = closed, 1 = open</span></div>
    <div class="diagnose-gates"></div><div class="plot diagnose-attention hidden"></div>`;
  const form = panel.querySelector("form"), error = panel.querySelector(".error");
  let result = null;
  const drawDiagnosticGates = () => {  // one gate of one layer-direction at a time: large models have many units
    const layer = result.layers[Number(panel.querySelector(".diagnose-layer").value || 0)];
    const gateSelect = panel.querySelector(".diagnose-gate"), chosen = gateSelect.value;
    gateSelect.innerHTML = "";
    Object.keys(layer.gates).forEach((name) => gateSelect.append(new Option(`${name} gate`, name)));
    if (chosen in layer.gates) gateSelect.value = chosen;
    const name = gateSelect.value, stats = layer.gates[name];
    const container = panel.querySelector(".diagnose-gates");
    container.innerHTML = "";
    const div = el("div", {class: "plot gate-heatmap", "data-gate": name});
    container.append(div);
    heatmap(div, transpose(stats.unit_mean), {
      title: `${name} gate — ${layer.name} (${Math.round(100 * stats.saturated.reduce((a, b) => a + (b || 0), 0) /
                                                          stats.saturated.length)}% of the activations saturated)`,
      colLabels: layer.labels, rowLabels: stats.unit_mean[0].map((_, u) => String(u)), xTitle: "token read",
      yTitle: "unit", zmin: 0, zmax: 1, colorbarTitle: "open"});
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(form);
    const body = {model: run.name, text: v.text};
    if (v.target) body.target = v.target;
    error.textContent = "";
    try {
      result = await api("POST", "/api/diagnostics", body);
    } catch (err) { error.textContent = err.message; return; }
    const target = Array.isArray(result.target) ? result.target.map(tokenLabel).join(" ") : result.target;
    panel.querySelector(".diagnose-summary").innerHTML = `L = <b>${result.loss.toFixed(4)}</b>: ${escapeHtml(result.loss_of)}` +
      (run.task === "lm" ? "" : `; target: <b>${escapeHtml(target)}</b>`) +
      (result.probabilities ? `; p = ${escapeHtml(Object.entries(result.probabilities).map(([k, p]) => `${k} ${p.toFixed(3)}`).join(", "))}` : "");
    // Layers that read the same steps share plots (a translation model: the encoder's, the decoder's).
    const groups = new Map();
    result.layers.forEach((layer) => {
      const key = layer.labels.join("\u0000");
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(layer);
    });
    const curves = panel.querySelector(".diagnose-curves");
    curves.innerHTML = "";
    for (const layers of groups.values()) {
      const part = layers[0].module.startsWith("decoder") ? "decoder: " : layers[0].module.startsWith("encoder") ? "encoder: " : "";
      const row = el("div", {class: "two-columns even"}, el("div", {class: "plot diagnose-grad"}), el("div", {class: "plot diagnose-norm"}));
      curves.append(row);
      const series = (key) => layers.filter((layer) => layer[key]).map((layer) => ({name: layer.name, y: layer[key]}));
      const xTitle = part === "decoder: " ? "step t (previous output token read)" : "step t (token read)";
      lineChart(row.children[0], series("grad_norm"), {
        title: `${part}||dL/dh_t||, how much the loss depends on h_t`, xTitle, yTitle: "||dL/dh_t|| (log scale)",
        logY: true, legend: true, xLabels: layers[0].labels});
      lineChart(row.children[1], series("hidden_norm"), {
        title: `${part}||h_t|| per step`, xTitle, yTitle: "||h_t||", legend: true, xLabels: layers[0].labels});
    }
    const select = panel.querySelector(".diagnose-layer");
    select.innerHTML = "";
    result.layers.forEach((layer, k) => { if (Object.keys(layer.gates).length) select.append(new Option(layer.name, String(k))); });
    panel.querySelector(".diagnose-gate-controls").classList.toggle("hidden", !select.options.length);
    if (select.options.length) drawDiagnosticGates(); else panel.querySelector(".diagnose-gates").innerHTML = "";
    const attention = panel.querySelector(".diagnose-attention");
    attention.classList.toggle("hidden", !result.attention);  // shown before plotly measures its width
    if (result.attention && result.attention.kind === "seq2seq") {
      heatmap(attention, result.attention.weights[0], {title: "Attention (teacher forcing on the target)",
        rowLabels: result.attention.rows, colLabels: result.attention.columns, xTitle: "source token",
        yTitle: "output token", zmin: 0, zmax: 1, colorscale: WHITE_BLUE, colorbarTitle: "weight"});
    } else if (result.attention && result.attention.kind === "pooling") {
      heatmap(attention, result.attention.weights[0], {title: "Attention pooling weights", rowLabels: ["weight"],
        colLabels: result.inputs, xTitle: "token", yTitle: "", zmin: 0, colorscale: WHITE_BLUE, colorbarTitle: "weight"});
    } else {
      attention.innerHTML = "";
    }
  });
  panel.querySelector(".diagnose-layer").addEventListener("change", drawDiagnosticGates);
  panel.querySelector(".diagnose-gate").addEventListener("change", drawDiagnosticGates);
  return panel;
}

const DIAGNOSE_DEFAULTS = {lm: "ROMEO: What light", classify: "a good film", tag: "the cat sat", translate: "14 March 2021"};

async function loadRuns() {
  const runs = await api("GET", "/api/runs");
  setupTranslate(runs);
  const list = document.getElementById("runs-list");
  list.innerHTML = runs.length ? "" : "<p>The server was started without run directories: " +
    "<code>rnnkit serve RUN_DIR...</code> (e.g. <code>rnnkit demo</code>, then <code>rnnkit serve runs/demo</code>).</p>";
  runs.forEach((run) => {
    const card = el("div", {class: "run", "data-run": run.name});
    const files = run.files.filter((f) => !f.startsWith("checkpoints/"));
    const report = files.find((f) => f.startsWith("report."));
    card.innerHTML = `<h3>${escapeHtml(run.name)} <small>(${run.task})</small></h3>` +
      (report ? `<a class="report-link" href="${fileUrl(run, report)}" target="_blank">open the report</a>` : "") +
      '<div class="two-columns"><div><h4>Settings</h4>' + keyValueTable(run.config) + "</div><div><h4>Last evaluation</h4>" +
      (Object.keys(run.metrics).length ? keyValueTable(run.metrics) : "<p class=\"note\">none</p>") + "</div></div>" +
      '<div class="plot run-plot"></div>' +
      `<div class="files">files: ${files.map((f) => `<a href="${fileUrl(run, f)}">${escapeHtml(f)}</a>`).join(" · ") || "none"}</div>` +
      `<div class="figures">${files.filter((f) => f.endsWith(".png")).map((f) =>
        `<figure><img src="${fileUrl(run, f)}" alt="${escapeHtml(f)}"><figcaption>${escapeHtml(f)}</figcaption></figure>`).join("")}</div>`;
    card.append(tryPanel(run), diagnosePanel(run, run.task === "lm" && run.config.level === "word" ? "the cat sat on the mat"
                                                                                                  : DIAGNOSE_DEFAULTS[run.task]));
    list.append(card);
    drawRunCurves(card.querySelector(".run-plot"), run);
  });
}

// -- start -----------------------------------------------------------------------------------------------
api("GET", "/api/limits").then((limits) => {
  LIMITS = limits;
  const hint = (selector, limit) => document.querySelectorAll(selector).forEach((input) => {
    input.title = `${input.title ? input.title + "; " : ""}the server allows at most ${LIMITS[limit]}`; });
  hint("#explore-form input[name=hidden_size], #explore-form input[name=input_size], #job-form input[name=hidden_size]", "max_hidden");
  hint("#explore-form input[name=num_layers]", "max_layers");
  hint("#job-form input[name=steps]", "max_job_steps");
  hint("#job-form input[name=seq_len]", "max_seq_len");
  hint("#translate-form input[name=beam_size]", "max_beam");
}).catch(() => {});
loadRuns().catch((err) => { document.getElementById("runs-list").textContent = err.message; });
runExplorer();
