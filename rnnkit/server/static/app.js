// The rnnkit page: four views over the JSON API (see /docs).
"use strict";

async function api(method, path, body) {
  const response = await fetch(path, {
    method, headers: body ? {"Content-Type": "application/json"} : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json();
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail
      : (data.detail || []).map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
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

// -- tabs ------------------------------------------------------------------------------------------------
document.querySelectorAll("nav .tab").forEach((tab) => tab.addEventListener("click", () => {
  document.querySelectorAll("nav .tab").forEach((t) => t.classList.toggle("active", t === tab));
  document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.id === tab.dataset.view));
}));

// -- architecture explorer -------------------------------------------------------------------------------
const GATE_COUNT = {rnn: 1, gru: 3, lstm: 4};

function drawDiagram(v) {
  const box = (text) => `<span class="box">${text}</span>`;
  const dir = v.bidirectional ? "forward + backward" : "forward";
  let html = box(`characters → embedding (d = ${v.input_size})`);
  for (let l = 0; l < v.num_layers; l++) {
    html += " → " + box(`layer ${l}: ${v.cell.toUpperCase()}${v.layer_norm ? " + LN" : ""} (${dir}, n = ${v.hidden_size})`);
  }
  html += " → " + box(`h_t (${v.hidden_size * (v.bidirectional ? 2 : 1)})`);
  document.getElementById("diagram").innerHTML = html;
}

async function runExplorer(event) {
  if (event) event.preventDefault();
  const v = formValues(document.getElementById("explore-form"));
  const error = document.getElementById("explore-error");
  error.textContent = "";
  drawDiagram(v);
  try {
    const r = await api("POST", "/api/explore", v);
    const p = r.parameters;
    const g = GATE_COUNT[v.cell];
    document.getElementById("param-table").innerHTML =
      `<tr><th>count</th><th>parameters</th></tr>` +
      `<tr><td>formula G[n(d+n)+n], G = ${g}, one bias</td><td id="param-formula">${p.formula}</td></tr>` +
      `<tr><td>formula + second bias (torch layout)</td><td id="param-formula-torch">${p.formula_torch}</td></tr>` +
      `<tr><td>counted on the model</td><td id="param-model">${p.model}</td></tr>`;
    lineChart(document.getElementById("norm-plot"), [{name: "||h_t||", values: r.hidden_norms}], {xLabel: "step t"});
    const hiddenT = r.hidden[0].map((_, u) => r.hidden.map((row) => row[u]));  // (units, T)
    heatmap(document.getElementById("hidden-heatmap"), hiddenT, hiddenT.map((_, u) => `unit ${u}`), r.tokens,
            {cellHeight: 12, min: -1, max: 1});
    const gates = document.getElementById("gate-heatmaps");
    gates.innerHTML = "";
    for (const [name, values] of Object.entries(r.gates)) {
      const title = document.createElement("h3");
      title.textContent = `${name} (layer 0, forward) — rows: units, columns: characters, 0 → 1`;
      const canvas = document.createElement("canvas");
      canvas.width = 900; canvas.height = 200; canvas.className = "gate-heatmap"; canvas.dataset.gate = name;
      gates.append(title, canvas);
      const byUnit = values[0].map((_, u) => values.map((row) => row[u]));
      heatmap(canvas, byUnit, byUnit.map((_, u) => `unit ${u}`), r.tokens, {cellHeight: 12, min: 0, max: 1});
    }
    if (!Object.keys(r.gates).length) gates.innerHTML = "<h3>A vanilla RNN has no gates.</h3>";
  } catch (err) {
    error.textContent = err.message;
  }
}
document.getElementById("explore-form").addEventListener("submit", runExplorer);

// -- training dynamics -----------------------------------------------------------------------------------
const lossSeries = [], gradSeries = [];  // one entry per job, same order (same colour) in both plots
let currentJob = null;

function redrawDynamics() {
  lineChart(document.getElementById("loss-plot"), lossSeries, {logY: true, xLabel: "training step"});
  lineChart(document.getElementById("grad-plot"), gradSeries, {logY: true, xLabel: "time step t"});
}

async function startJob(event) {
  event.preventDefault();
  const v = formValues(document.getElementById("job-form"));
  const status = document.getElementById("job-status"), error = document.getElementById("job-error");
  error.textContent = "";
  try {
    const job = await api("POST", "/api/jobs", v);
    currentJob = job.id;
    const series = {name: `#${job.id} ${v.cell} ${v.experiment}`, points: []};
    const grads = {name: series.name, values: []};
    lossSeries.push(series);
    gradSeries.push(grads);
    document.getElementById("job-cancel").disabled = false;
    status.textContent = `job ${job.id}: running`;
    const source = new EventSource(`/api/jobs/${job.id}/events`);
    source.onmessage = (message) => {
      const e = JSON.parse(message.data);
      series.points.push([e.step, e.loss]);
      grads.values = e.grad_norms;  // ||dL/dh_t|| of the latest training step
      status.textContent = `job ${job.id}: step ${e.step}/${v.steps}, loss ${e.loss.toFixed(4)}`;
      redrawDynamics();
    };
    source.addEventListener("end", (message) => {
      const d = JSON.parse(message.data);
      status.textContent = `job ${job.id}: ${d.status} after ${series.points.length} steps` + (d.error ? ` (${d.error})` : "");
      source.close();
      if (currentJob === job.id) document.getElementById("job-cancel").disabled = true;
    });
  } catch (err) {
    error.textContent = err.message;
  }
}
document.getElementById("job-form").addEventListener("submit", startJob);
document.getElementById("job-cancel").addEventListener("click", async () => {
  if (currentJob) await api("DELETE", `/api/jobs/${currentJob}`);
});

// -- translation demo ------------------------------------------------------------------------------------
let hypotheses = [];

function chooseHypothesis(k) {
  document.querySelectorAll("#nbest li").forEach((li, i) => li.classList.toggle("chosen", i === k));
  const h = hypotheses[k];
  if (h && h.attention) heatmap(document.getElementById("attention-heatmap"), h.attention, h.tokens, h.source_tokens,
                                {min: 0, max: 1});
}

async function runTranslate(event) {
  event.preventDefault();
  const v = formValues(document.getElementById("translate-form"));
  if (!v.model) delete v.model;
  const error = document.getElementById("translate-error");
  error.textContent = "";
  try {
    const r = await api("POST", "/api/translate", v);
    hypotheses = r.hypotheses;
    const list = document.getElementById("nbest");
    list.innerHTML = "";
    hypotheses.forEach((h, k) => {
      const li = document.createElement("li");
      const text = document.createElement("span");
      text.className = "hyp-text"; text.textContent = h.text;
      const score = document.createElement("span");
      score.className = "score"; score.textContent = `score ${h.score.toFixed(3)}  log p ${h.log_prob.toFixed(3)}`;
      li.append(text, score);
      li.addEventListener("click", () => chooseHypothesis(k));
      list.append(li);
    });
    chooseHypothesis(0);
  } catch (err) {
    error.textContent = err.message;
  }
}
document.getElementById("translate-form").addEventListener("submit", runTranslate);

// -- runs ------------------------------------------------------------------------------------------------
async function loadRuns() {
  const runs = await api("GET", "/api/runs");
  const select = document.getElementById("translate-model");
  select.innerHTML = "";
  runs.filter((r) => r.task === "translate").forEach((r) => select.append(new Option(r.name, r.name)));
  const list = document.getElementById("runs-list");
  list.innerHTML = runs.length ? "" : "<p>The server was started without run directories.</p>";
  runs.forEach((run, k) => {
    const div = document.createElement("div");
    div.className = "run";
    const evals = run.records.filter((r) => r.event === "eval");
    const files = run.files.map((f) => `<a href="/api/runs/${encodeURIComponent(run.name)}/files/${f}">${f}</a>`).join(" · ");
    div.innerHTML = `<h3>${run.name} <small>(${run.task})</small></h3><div>${run.path}</div>` +
      `<pre>${JSON.stringify(run.config)}\nlast evaluation: ${JSON.stringify(run.metrics)}</pre>` +
      `<div>files: ${files || "none"}</div><canvas class="run-plot" id="run-plot-${k}" width="900" height="180"></canvas>`;
    list.append(div);
    const metricNames = Object.keys(evals.length ? evals[evals.length - 1].metrics : {});
    const series = metricNames.map((m) => ({name: `valid ${m}`, points: evals.map((e) => [e.step, e.metrics[m]])}));
    lineChart(div.querySelector("canvas"), series.filter((s) => s.name === "valid loss"), {xLabel: "step"});
  });
}

loadRuns().catch((err) => { document.getElementById("runs-list").textContent = err.message; });
runExplorer();
