// Plots of the rnnkit page, drawn with the vendored plotly.js (static/vendor/, no network access):
// line charts (linear or log y) and labelled heatmaps with a colour bar.
"use strict";

const PLOT_CONFIG = {displaylogo: false, responsive: true,
                     modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"]};
const PLOT_FONT = {family: "DejaVu Sans, Arial, sans-serif", size: 12, color: "#222"};
const CELL_COLOURS = {rnn: "#d62728", lstm: "#1f77b4", gru: "#2ca02c"};
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

// A token as an axis label: spaces and newlines made visible, long tokens cut.
function tokenLabel(token) {
  const text = String(token);
  if (text === " ") return "␣";
  if (text === "\n") return "↵";
  return text.length > 12 ? text.slice(0, 11) + "…" : text;
}

// Tick labels for index positions 0..n-1; at most ~40 shown so that long inputs stay readable.
function indexTicks(labels) {
  const step = Math.max(1, Math.ceil(labels.length / 40));
  const tickvals = [], ticktext = [];
  labels.forEach((label, i) => { if (i % step === 0) { tickvals.push(i); ticktext.push(tokenLabel(label)); } });
  return {tickmode: "array", tickvals, ticktext};
}

// Log-axis ticks that read well: 0.1, 0.2, 0.5, 1 ... over a narrow range, powers of ten over a wide one.
function logTicks(series) {
  const positive = series.flatMap((s) => s.y).filter((y) => typeof y === "number" && y > 0);
  if (!positive.length) return {};
  const decades = Math.log10(Math.max(...positive) / Math.min(...positive));
  if (decades < 0.7) return {exponentformat: "none", tickformat: "~g"};  // plotly's own: 1.5, 2, 2.5 ...
  if (decades < 2) return {dtick: "D2", exponentformat: "none", tickformat: "~g"};
  return {dtick: decades > 8 ? 2 : 1, exponentformat: "power"};
}

// series: [{name, y, x?, color?, dash?, mode?}]; options: {title, xTitle, yTitle, logY, height, xLabels, yRange}
// With xLabels the x values are positions 0..n-1 labelled by those tokens.
function lineChart(element, series, options = {}) {
  const data = series.map((s, k) => ({
    type: "scatter", mode: s.mode || (s.y.length > 60 ? "lines" : "lines+markers"), name: s.name,
    x: s.x || s.y.map((_, i) => (options.xLabels ? i : i + 1)), y: s.y,
    line: {color: s.color || PALETTE[k % PALETTE.length], width: 2, dash: s.dash || "solid"},
    marker: {size: 5},
    text: options.xLabels ? options.xLabels.map(tokenLabel) : undefined,
    hovertemplate: (options.xLabels ? "%{text}" : "%{x}") + ": %{y:.4g}<extra>" + s.name + "</extra>",
  }));
  const xaxis = {title: {text: options.xTitle || ""}, zeroline: false, automargin: true};
  if (options.xLabels) Object.assign(xaxis, indexTicks(options.xLabels));
  const yaxis = {title: {text: options.yTitle || ""}, type: options.logY ? "log" : "linear", automargin: true};
  if (options.logY) Object.assign(yaxis, logTicks(series));
  if (options.yRange) yaxis.range = options.yRange;
  const layout = {
    title: options.title ? {text: options.title, font: {size: 14}, x: 0, xanchor: "left"} : undefined,
    height: options.height || 280, margin: {l: 70, r: 20, t: options.title ? 40 : 16, b: 50},
    font: PLOT_FONT, xaxis, yaxis, showlegend: series.length > 1 || Boolean(options.legend),
    legend: {x: 1.01, xanchor: "left", y: 1, font: {size: 11}}, paper_bgcolor: "white", plot_bgcolor: "white",
  };
  element.dataset.points = String(series.reduce((n, s) => n + s.y.length, 0));  // for tests and the curious
  return Plotly.react(element, data, layout, PLOT_CONFIG);
}

// White (0) to dark blue (1): attention weights, where most cells are near 0.
const WHITE_BLUE = [[0, "#ffffff"], [0.1, "#deebf7"], [0.4, "#6baed6"], [0.7, "#2171b5"], [1, "#08306b"]];

// matrix: rows x columns; options: {rowLabels, colLabels, title, xTitle, yTitle, zmin, zmax, colorscale,
// colorbarTitle}. Rows are drawn top to bottom in their order.
function heatmap(element, matrix, options = {}) {
  const rows = matrix.length, cols = rows ? matrix[0].length : 0;
  const rowLabels = options.rowLabels || matrix.map((_, i) => String(i));
  const colLabels = options.colLabels || (rows ? matrix[0].map((_, j) => String(j)) : []);
  const text = matrix.map((_, i) => colLabels.map((c) => `${options.yTitle || "row"} ${tokenLabel(rowLabels[i])}` +
                                                      ` · ${options.xTitle || "column"} ${tokenLabel(c)}`));
  const data = [{
    type: "heatmap", z: matrix, x: colLabels.map((_, j) => j), y: rowLabels.map((_, i) => i),
    zmin: options.zmin, zmax: options.zmax, colorscale: options.colorscale || "Viridis", text,
    hovertemplate: "%{text}<br>value %{z:.3f}<extra></extra>", xgap: cols <= 60 ? 1 : 0, ygap: rows <= 60 ? 1 : 0,
    colorbar: {title: {text: options.colorbarTitle || "", side: "right"}, thickness: 14, len: 1},
  }];
  const layout = {
    title: options.title ? {text: options.title, font: {size: 14}, x: 0, xanchor: "left"} : undefined,
    height: Math.min(720, Math.max(220, 14 * rows + 130)),
    margin: {l: 80, r: 20, t: options.title ? 40 : 16, b: 60}, font: PLOT_FONT,
    xaxis: {title: {text: options.xTitle || ""}, ...indexTicks(colLabels), side: "bottom", automargin: true,
            showgrid: false, zeroline: false},
    yaxis: {title: {text: options.yTitle || ""}, ...indexTicks(rowLabels), autorange: "reversed", automargin: true,
            showgrid: false, zeroline: false},
    paper_bgcolor: "white", plot_bgcolor: "white",
  };
  element.dataset.cells = String(rows * cols);  // for tests and the curious
  return Plotly.react(element, data, layout, PLOT_CONFIG);
}

// A (T, H) list of rows as the (H, T) matrix a heatmap with units as rows and steps as columns needs.
function transpose(rows) {
  return rows.length ? rows[0].map((_, j) => rows.map((row) => row[j])) : [];
}
