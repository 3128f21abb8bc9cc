// fmriface dashboard: line plots on a plain <canvas> (no library, nothing fetched from outside).
//
// drawPlot(canvas, {xs, series: [{label, color, ys, dots, width}], log, ymin, ymax, threshold: {y, label, color},
//                   marks: [{x, y}], vmarks: [x], xlabel, ylabel, xmin, xmax})
// draws the series against xs (null ys leave a gap) and sets canvas.dataset.points to the number of x values
// drawn, canvas.dataset.marks to the number of marks, canvas.dataset.vmarks to the number of vertical marks
// (a translucent band behind the series at each x: the censored volumes).
"use strict";

(function () {
  const PAD = { left: 46, right: 10, top: 18, bottom: 22 };
  const GRID = "rgba(148,163,184,0.18)";
  const AXIS = "#94a3b8";
  const BG = "#0f172a";

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
    return step * mag;
  }

  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const step = niceStep(hi - lo, count);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-6; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1000) return v.toFixed(0);
    if (a >= 10) return v.toFixed(0);
    if (a >= 1) return v.toFixed(1);
    if (a >= 0.01) return v.toFixed(2);
    if (a >= 0.001) return v.toFixed(3);
    return v.toExponential(0);
  }

  function fit(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(50, canvas.clientWidth), h = Math.max(40, canvas.clientHeight);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d", { alpha: false });  // opaque: cheaper to composite
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { ctx, w, h };
  }

  function drawPlot(canvas, o) {
    const { ctx, w, h } = fit(canvas);
    const xs = o.xs || [];
    const series = o.series || [];
    const log = !!o.log;
    const floor = o.logFloor || 0.01;
    const ty = (v) => (log ? Math.log10(Math.max(v, floor)) : v);
    ctx.fillStyle = BG;
    ctx.fillRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    let lo = Infinity, hi = -Infinity;
    for (const s of series) {
      for (const y of s.ys) {
        if (y === null || y === undefined || !isFinite(y)) continue;
        const v = ty(y);
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (o.threshold && isFinite(o.threshold.y)) {
      lo = Math.min(lo, ty(o.threshold.y));
      hi = Math.max(hi, ty(o.threshold.y));
    }
    if (o.ymin !== undefined) lo = Math.min(lo, ty(o.ymin));
    if (o.ymax !== undefined) hi = Math.max(hi, ty(o.ymax));
    if (!isFinite(lo) || !isFinite(hi)) { lo = 0; hi = 1; }
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    if (!log) { const pad = (hi - lo) * 0.06; lo -= pad; hi += pad; }
    let x0 = o.xmin !== undefined ? o.xmin : xs.length ? xs[0] : 0;
    let x1 = o.xmax !== undefined ? o.xmax : xs.length ? xs[xs.length - 1] : 1;
    if (x1 - x0 < 1) x1 = x0 + 1;
    const L = PAD.left, R = w - PAD.right, T = PAD.top, B = h - PAD.bottom;
    const X = (x) => L + ((x - x0) / (x1 - x0)) * (R - L);
    const Y = (v) => B - ((v - lo) / (hi - lo)) * (B - T);

    // grid and axes
    ctx.strokeStyle = GRID;
    ctx.fillStyle = AXIS;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const yt = log ? logTicks(lo, hi) : ticks(lo, hi, Math.max(2, Math.floor((B - T) / 28)));
    for (const v of yt) {
      const y = Y(v);
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(R, y); ctx.stroke();
      ctx.fillText(fmt(log ? Math.pow(10, v) : v), L - 4, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const v of ticks(x0, x1, Math.max(2, Math.floor((R - L) / 70)))) {
      if (Math.abs(v - Math.round(v)) > 1e-9) continue;
      const x = X(v);
      ctx.beginPath(); ctx.moveTo(x, T); ctx.lineTo(x, B); ctx.stroke();
      ctx.fillText(String(Math.round(v)), x, B + 4);
    }
    ctx.strokeStyle = AXIS;
    ctx.strokeRect(L, T, R - L, B - T);
    if (o.ylabel) {
      ctx.save(); ctx.textAlign = "left"; ctx.textBaseline = "top"; ctx.fillText(o.ylabel, 4, 2); ctx.restore();
    }

    // threshold
    if (o.threshold && isFinite(o.threshold.y)) {
      const y = Y(ty(o.threshold.y));
      ctx.save();
      ctx.strokeStyle = o.threshold.color || "#f87171";
      ctx.setLineDash([5, 4]);
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(R, y); ctx.stroke();
      ctx.restore();
      if (o.threshold.label) {
        ctx.save(); ctx.fillStyle = o.threshold.color || "#f87171"; ctx.textAlign = "right"; ctx.textBaseline = "bottom";
        ctx.fillText(o.threshold.label, R - 2, y - 2); ctx.restore();
      }
    }

    // series
    ctx.save();
    ctx.beginPath(); ctx.rect(L, T, R - L, B - T); ctx.clip();
    const vmarks = o.vmarks || [];
    if (vmarks.length) {
      ctx.fillStyle = o.vmarkColor || "rgba(248,113,113,0.35)";
      const bw = Math.max(2, (R - L) / Math.max(1, x1 - x0) * 0.8);
      for (const x of vmarks) ctx.fillRect(X(x) - bw / 2, T, bw, B - T);
    }
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = s.width || 1.4;
      const sx = s.xs || xs;
      if (s.dots) {
        for (let i = 0; i < s.ys.length; i++) {
          const y = s.ys[i];
          if (y === null || y === undefined || !isFinite(y)) continue;
          ctx.beginPath(); ctx.arc(X(sx[i]), Y(ty(y)), 2.5, 0, 2 * Math.PI); ctx.fill();
        }
        continue;
      }
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < s.ys.length; i++) {
        const y = s.ys[i];
        if (y === null || y === undefined || !isFinite(y)) { pen = false; continue; }
        const px = X(sx[i]), py = Y(ty(y));
        if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        pen = true;
      }
      ctx.stroke();
    }
    const marks = o.marks || [];
    ctx.fillStyle = o.markColor || "#f87171";
    for (const m of marks) {
      ctx.beginPath(); ctx.arc(X(m.x), Y(ty(m.y)), 3.5, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.restore();

    // legend
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    let lx = L + 6;
    for (const s of series) {
      if (!s.label) continue;
      ctx.fillStyle = s.color;
      ctx.fillRect(lx, T + 7, 10, 3);
      ctx.fillStyle = "#e2e8f0";
      ctx.fillText(s.label, lx + 13, T + 8);
      lx += 20 + ctx.measureText(s.label).width;
    }
    if (!xs.length) {
      ctx.fillStyle = AXIS; ctx.textAlign = "center";
      ctx.fillText(o.empty || "no data yet", (L + R) / 2, (T + B) / 2);
    }
    canvas.dataset.points = String(xs.length);
    canvas.dataset.marks = String(marks.length);
    canvas.dataset.vmarks = String(vmarks.length);
  }

  function logTicks(lo, hi) {
    const out = [];
    for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) if (e >= lo - 1e-9 && e <= hi + 1e-9) out.push(e);
    return out.length >= 2 ? out : [lo, hi];
  }

  window.fmrifacePlots = { drawPlot, ticks };
})();
