// Small canvas plots for the rnnkit page: line charts and heatmaps, no external library.
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"];

function clearCanvas(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  return ctx;
}

// series: [{name, values: [y...] or points: [[x, y]...]}]; options: {logY, xLabel}
function lineChart(canvas, series, options = {}) {
  const ctx = clearCanvas(canvas);
  const left = 60, right = 140, top = 10, bottom = 28;
  const w = canvas.width - left - right, h = canvas.height - top - bottom;
  const tr = (y) => (options.logY ? Math.log10(Math.max(y, 1e-12)) : y);
  const all = [];
  const lines = series.map((s) => (s.points || s.values.map((y, i) => [i + 1, y])));
  lines.forEach((pts) => pts.forEach(([x, y]) => all.push([x, tr(y)])));
  if (all.length === 0) { canvas.dataset.points = "0"; return; }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y1 = y0 + 1; y0 -= 1; }
  const px = (x) => left + ((x - x0) / (x1 - x0)) * w;
  const py = (y) => top + h - ((y - y0) / (y1 - y0)) * h;
  ctx.strokeStyle = "#999"; ctx.strokeRect(left, top, w, h);
  ctx.fillStyle = "#333"; ctx.font = "11px sans-serif";
  for (const y of [y0, (y0 + y1) / 2, y1]) {
    const label = options.logY ? "1e" + y.toFixed(1) : y.toPrecision(3);
    ctx.fillText(label, 4, py(y) + 4);
  }
  ctx.fillText(String(x0), left, top + h + 16);
  ctx.fillText(String(x1), left + w - 20, top + h + 16);
  if (options.xLabel) ctx.fillText(options.xLabel, left + w / 2 - 20, top + h + 16);
  lines.forEach((pts, k) => {
    ctx.strokeStyle = PALETTE[k % PALETTE.length]; ctx.lineWidth = 1.5; ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(px(x), py(tr(y))) : ctx.moveTo(px(x), py(tr(y)))));
    ctx.stroke();
    ctx.fillStyle = PALETTE[k % PALETTE.length];
    ctx.fillText(series[k].name || "", left + w + 8, top + 14 + 14 * k);
  });
  canvas.dataset.points = String(all.length);  // for tests: how many points are drawn
}

// matrix: rows x cols numbers; rowLabels / colLabels optional; colour from white (min) to blue (max)
function heatmap(canvas, matrix, rowLabels = [], colLabels = [], options = {}) {
  const rows = matrix.length, cols = rows ? matrix[0].length : 0;
  const left = rowLabels.length ? 90 : 10, top = colLabels.length ? 40 : 10;
  const cell = Math.max(4, Math.min(28, Math.floor((canvas.width - left - 10) / Math.max(cols, 1))));
  const cellH = Math.max(3, Math.min(28, options.cellHeight || cell));
  canvas.height = top + rows * cellH + 10;
  const ctx = clearCanvas(canvas);
  const flat = matrix.flat();
  const lo = options.min ?? Math.min(...flat), hi = options.max ?? Math.max(...flat);
  const span = hi - lo || 1;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = (matrix[i][j] - lo) / span;
      const r = Math.round(255 - 225 * v), g = Math.round(255 - 170 * v), b = Math.round(255 - 75 * v);
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(left + j * cell, top + i * cellH, cell - 1, cellH - 1);
    }
  }
  ctx.fillStyle = "#222"; ctx.font = "11px sans-serif";
  rowLabels.forEach((t, i) => ctx.fillText(String(t).slice(0, 12), 4, top + i * cellH + cellH * 0.7));
  colLabels.forEach((t, j) => {
    ctx.save(); ctx.translate(left + j * cell + cell * 0.7, top - 4); ctx.rotate(-Math.PI / 3);
    ctx.fillText(String(t) === " " ? "␣" : String(t).slice(0, 10), 0, 0); ctx.restore();
  });
  canvas.dataset.cells = String(rows * cols);  // for tests: how many cells are drawn
}
