// fmriface dashboard: the page. Takes the dashboard's Server-Sent Events (/events), keeps bounded arrays of
// what it shows, and redraws once per animation frame whatever changed. Every string from the stream goes
// into the page as text (textContent), never as HTML.
//
// For tests and benchmarks: window.fmrifaceDashboard holds the state and the page's own latency records
// (frame sent -> page updated); plots carry data-points, counts data-value, faces data-volume / data-seq.
"use strict";

(function () {
  const { drawPlot } = window.fmrifacePlots;
  const $ = (id) => document.getElementById(id);
  const now = () => performance.timeOrigin + performance.now();
  const COLORS = ["#60a5fa", "#34d399", "#fbbf24", "#f472b6", "#a78bfa", "#fb923c", "#e2e8f0", "#22d3ee", "#f87171"];
  const STAGE_COLORS = { read: "#60a5fa", queue: "#a78bfa", motion: "#34d399", decode: "#fbbf24", send: "#f472b6",
    total: "#e2e8f0", wire: "#22d3ee", page: "#fb923c", screen: "#f87171" };

  const S = {
    runId: null, counts: {}, status: null, statusExtra: {}, end: null, target: null, tr: null, qa: null, qaMaps: null,
    points: [], trialPoints: [], flips: [], trials: [], film: [], latest: null, problems: [],
    runs: [], runsNote: "", info: {}, config: { history: 1000, fd_threshold: 0.5, trials_kept: 24, film: 8,
      problems_kept: 200, stages: ["read", "queue", "motion", "decode", "send"] },
    lastMessage: 0, pageLatency: [],
  };
  const page = { latency: [], pending: [], events: 0, snapshots: 0, errors: 0, lastError: "", renders: 0, renderMs: 0,
    connected: false, connects: 0 };
  window.fmrifaceDashboard = { state: S, page };

  // ---- helpers -----------------------------------------------------------------------------------------
  function push(arr, item, cap) {
    arr.push(item);
    if (arr.length > cap) arr.splice(0, arr.length - cap);
  }
  function text(el, s) {  // only when it changed: a text node replaced is a layout to redo
    if (!el) return;
    const v = s === null || s === undefined ? "–" : String(s);
    if (el.textContent !== v) el.textContent = v;
  }
  function setData(el, key, v) { if (el.dataset[key] !== v) el.dataset[key] = v; }
  function num(v, digits) {
    if (v === null || v === undefined || typeof v !== "number" || !isFinite(v)) return "–";
    return digits === undefined ? String(v) : v.toFixed(digits);
  }
  function el(tag, cls, content) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined) e.textContent = content;
    return e;
  }
  function pct(values, q) {
    const v = values.filter((x) => typeof x === "number" && isFinite(x)).sort((a, b) => a - b);
    if (!v.length) return null;
    const i = (v.length - 1) * q, a = Math.floor(i), b = Math.ceil(i);
    return v[a] + (v[b] - v[a]) * (i - a);
  }
  function safe(fn) {
    return (ev) => {
      page.events += 1;
      try { fn(JSON.parse(ev.data)); } catch (err) { page.errors += 1; page.lastError = String(err); mark(); }
    };
  }

  // ---- dirty marks, one render per animation frame ------------------------------------------------------
  // The page is redrawn at the next animation frame, but at most 20 times a second: a burst of a backlog (a
  // restart catching up, a fast replay) would otherwise redraw it at every animation frame, for no eye.
  const PERIOD_MS = 50;
  const dirty = new Set();
  let rafPending = false, lastRender = -1e9, timer = null;
  function mark(...what) {
    for (const w of what) if (w) dirty.add(w);
    if (timer) return;  // held back already: the timer asks for the animation frame (none wasted meanwhile)
    if (!rafPending) { rafPending = true; requestAnimationFrame(render); }
  }

  // ---- the stream ------------------------------------------------------------------------------------------
  let es = null, retryTimer = null;
  function setConn(state) {
    document.body.dataset.connection = state;
    const c = $("conn");
    text(c, { live: "dashboard: connected", connecting: "dashboard: connecting", reconnecting: "dashboard: reconnecting",
      unauthorised: "dashboard: token refused", closed: "dashboard: closed" }[state] || state);
    c.className = "pill " + (state === "live" ? "ok" : state === "unauthorised" ? "bad" : "warn");
  }
  function connect() {
    clearTimeout(retryTimer);
    if (es) es.close();
    setConn(page.connects ? "reconnecting" : "connecting");
    es = new EventSource("/events");
    es.onopen = () => { page.connected = true; page.connects += 1; setConn("live"); };
    es.onerror = () => {
      page.connected = false;
      if (es.readyState === EventSource.CLOSED) {  // an HTTP error (401, 503): EventSource gives up; we retry
        fetch("/api/state", { credentials: "same-origin" }).then((r) => {
          setConn(r.status === 401 ? "unauthorised" : "reconnecting");
        }).catch(() => setConn("reconnecting"));
        retryTimer = setTimeout(connect, 1500);
      } else {
        setConn("reconnecting");
      }
    };
    es.addEventListener("snapshot", safe(onSnapshot));
    es.addEventListener("frame", safe(onFrame));
    es.addEventListener("face", safe(onFace));
    es.addEventListener("trial", safe(onTrial));
    es.addEventListener("status", safe(onStatus));
    es.addEventListener("end", safe(onEnd));
    es.addEventListener("problem", safe(onProblem));
    es.addEventListener("points", safe(onPoints));
    es.addEventListener("flips", safe(onFlips));
    es.addEventListener("qa", safe(onQa));
    es.addEventListener("runs", safe((d) => { S.runs = d.runs || []; S.runsNote = d.note || ""; mark("runs"); }));
  }

  function onSnapshot(d) {
    page.snapshots += 1;
    const runChanged = d.run_id !== S.runId;
    S.runId = d.run_id; S.counts = d.counts || {}; S.status = d.status; S.statusExtra = d.status_extra || {};
    S.end = d.end; S.target = d.target; S.tr = d.tr; S.config = d.config || S.config; S.info = d.info || {};
    S.points = d.points || []; S.trialPoints = d.trial_points || []; S.flips = d.flips || [];
    S.trials = d.trials || []; S.film = d.film || []; S.latest = d.latest; S.problems = d.problems || [];
    S.runs = d.runs || []; S.runsNote = d.runs_note || "";
    S.qa = d.qa || null; S.qaMaps = d.qa_maps || null;
    if (d.last_message && d.now) S.lastMessage = now() - 1000 * (d.now - d.last_message);
    if (runChanged) S.pageLatency = [];
    const have = new Set(S.points.map((p) => p.v));
    S.pageLatency = S.pageLatency.filter((r) => have.has(r.v));
    document.body.dataset.snapshots = String(page.snapshots);
    mark("all");
  }

  function pushPoint(p) {
    const pts = S.points;
    if (pts.length && p.v <= pts[pts.length - 1].v) return;  // known already (the server resends all if not)
    push(pts, p, S.config.history);
  }

  function onFrame(d) {
    const p = d.p;
    S.counts = d.counts || S.counts;
    S.target = d.target === undefined ? S.target : d.target;
    S.lastMessage = now();
    if (p && typeof p.v === "number") pushPoint(p);
    if (d.img) {
      S.latest = { v: p.v, q: p.q, img: d.img, fb: p.fb, sent: p.sent };
      push(S.film, { v: p.v, q: p.q, img: d.img }, S.config.film);
    }
    page.pending.push({ q: p.q, v: p.v, sent: typeof p.sent === "number" ? 1000 * p.sent : null, rx: now(),
      img: !!d.img });
    mark("counts", "motion", "latency", "feedback", d.img ? "face" : null, "header", "qa");
  }
  function onFace(d) {  // the newest face of a burst, sent after its frame
    const f = d.face;
    S.latest = f;
    push(S.film, { v: f.v, q: f.q, img: f.img }, S.config.film);
    mark("face");
  }
  function onTrial(d) {
    S.counts = d.counts || S.counts;
    S.lastMessage = now();
    const t = d.trial;
    push(S.trials, t, S.config.trials_kept);
    if (typeof t.v === "number") push(S.trialPoints, { v: t.v, fb: t.fb }, S.config.history);
    mark("counts", "trials", "feedback");
  }
  function onStatus(d) {
    S.status = d.status; S.statusExtra = d.extra || {}; S.counts = d.counts || S.counts;
    S.target = d.target === undefined ? S.target : d.target;
    if (d.qa !== undefined) S.qa = d.qa;
    S.lastMessage = now();
    mark("counts", "header", "summary", "face", "qa");
  }
  function onEnd(d) {
    S.end = d.end; S.counts = d.counts || S.counts; S.lastMessage = now();
    mark("counts", "header", "summary");
  }
  function onProblem(d) {
    S.counts = d.counts || S.counts;
    push(S.problems, d.problem, S.config.problems_kept);
    mark("counts", "problems");
  }
  function onPoints(d) {
    S.counts = d.counts || S.counts;
    for (const p of d.points || []) pushPoint(p);
    mark("counts", "motion", "latency", "feedback", "qa");
  }
  function onQa(d) {  // the newest QA maps (every few volumes)
    S.qaMaps = d.maps;
    S.counts = d.counts || S.counts;
    S.lastMessage = now();
    mark("qa");
  }
  function onFlips(d) {
    S.counts = d.counts || S.counts;
    for (const f of d.flips || []) push(S.flips, f, S.config.history);
    mark("latency", "counts");
  }

  // ---- rendering ----------------------------------------------------------------------------------------------
  function render() {
    const t0 = performance.now();
    try { renderAll(); } finally { page.renderMs += performance.now() - t0; }
  }

  function renderAll() {
    rafPending = false;
    const all = dirty.has("all");
    const tnow = performance.now();
    if (!all && tnow - lastRender < PERIOD_MS) {  // held back: drawn when the period is over
      if (!timer) timer = setTimeout(() => { timer = null; mark(); }, PERIOD_MS - (tnow - lastRender));
      return;
    }
    lastRender = tnow;
    const todo = new Set(dirty);
    dirty.clear();
    const has = (w) => all || todo.has(w);
    page.renders += 1;
    if (currentView() !== "live") { stampPending(); return; }
    if (has("header")) renderHeader();
    if (has("counts")) renderCounts();
    if (has("motion")) renderMotion();
    if (has("qa")) renderQA();
    if (has("latency")) renderLatency();
    if (has("feedback")) renderFeedback();
    if (has("trials")) renderTrials();
    if (has("problems")) renderProblems(all);
    if (has("summary")) renderSummary();
    if (has("runs")) renderRuns();
    let decoding = null;
    if (has("face")) decoding = renderFaces();
    setData(document.body, "run", S.runId || "");
    setData(document.body, "events", String(page.events));
    setData(document.body, "errors", String(page.errors));
    if (decoding) decoding.then(stampPending, stampPending); else stampPending();
  }

  function stampPending() {
    if (!page.pending.length) return;
    const t = now();
    for (const r of page.pending) {
      r.upd = t;
      push(page.latency, r, 20000);
      if (r.sent !== null && typeof r.v === "number") push(S.pageLatency, { v: r.v, ms: t - r.sent }, S.config.history);
    }
    page.pending = [];
    setData(document.body, "updated", String(page.latency.length));
  }

  function renderHeader() {
    text($("run-id"), S.runId ? "run " + S.runId : "no run yet");
    const st = S.end ? "ended" : S.status && S.status.state ? S.status.state : "–";
    const pill = $("run-state");
    text(pill, st);
    pill.className = "pill " + (st === "running" ? "ok" : st === "ended" ? "info" : "warn");
    document.body.dataset.state = st;
    const cond = S.status ? S.status.condition : null, cp = $("condition");
    cp.hidden = !cond;  // live, sham (yoked feedback) or blinded (allocated by a file the operator need not see)
    text(cp, cond === "sham" ? "SHAM feedback" : cond === "blinded" ? "feedback: blinded" : "feedback: " + (cond || ""));
    cp.className = "pill " + (cond === "sham" ? "bad" : cond === "blinded" ? "info" : "ok");
    document.body.dataset.condition = cond || "";
    const up = S.status && typeof S.status.uptime_s === "number" ? S.status.uptime_s : null;
    text($("uptime"), up === null ? "" : "up " + formatDuration(up));
  }

  function formatDuration(s) {
    const m = Math.floor(s / 60), sec = Math.floor(s % 60);
    return m ? `${m} min ${sec} s` : `${sec} s`;
  }

  const COUNTS = [
    ["seen", "volumes seen (service)"], ["frames", "frames received"], ["ok", "volumes ok (service)"], ["failed", "failed (service)"],
    ["missing", "missing volume numbers"], ["lost", "frames lost on the way"],
    ["discarded", "discarded (dummy volumes)"], ["skipped", "skipped by intake"], ["intake.incomplete", "incomplete"], ["intake.corrupt", "corrupt"],
    ["intake.gap", "gaps (never arrived)"], ["intake.duplicate", "duplicate"], ["intake.late", "late"],
    ["intake.mismatch", "mismatch"], ["duplicates_ignored", "duplicates ignored (service)"],
    ["errors", "volume errors"], ["fd_above", "FD above threshold"], ["trials", "trials"],
    ["trials_pending", "trials pending"], ["flips", "display flips"], ["malformed", "malformed messages"],
    ["restarts", "service restarts"],
  ];
  function countValue(key) {
    let v = S.counts;
    for (const k of key.split(".")) v = v && typeof v === "object" ? v[k] : undefined;
    return v;
  }
  function renderCounts() {
    const dl = $("counts");
    if (!dl.childElementCount) {
      for (const [key, label] of COUNTS) {
        const row = el("div", "count");
        const dt = el("dt", "", label);
        const dd = el("dd", "", "–");
        dd.id = "c-" + key.replace(".", "-");
        row.append(dt, dd);
        dl.append(row);
      }
    }
    const needsRuns = ["skipped", "intake.incomplete", "intake.corrupt", "intake.gap", "intake.duplicate",
      "intake.late", "intake.mismatch", "errors", "flips"];
    for (const [key] of COUNTS) {
      const dd = $("c-" + key.replace(".", "-"));
      let v = countValue(key);
      if (needsRuns.includes(key) && !S.info.runs) v = null;
      setData(dd, "value", v === null || v === undefined ? "" : String(v));
      text(dd, v === null || v === undefined ? "–" : v);
      dd.parentElement.classList.toggle("alert", typeof v === "number" && v > 0 &&
        ["failed", "missing", "lost", "skipped", "errors", "fd_above", "malformed"].includes(key));
    }
    const st = S.status || {};
    text($("last-volume"), st.last_volume === null || st.last_volume === undefined ? "–" : st.last_volume);
    const note = $("counts-note");
    text(note, S.info.runs ? "intake counts from the run records (" + S.info.runs + ")"
      : "intake problems and flip acks are not on the published stream: start the dashboard with --runs to see them");
  }

  function xsOf(pts) { return pts.map((p) => p.v); }

  function renderMotion() {
    const pts = S.points;
    const xs = xsOf(pts);
    const m = (i) => pts.map((p) => (p.m ? p.m[i] : null));
    const names = ["x", "y", "z"];
    drawPlot($("plot-translation"), { xs, ylabel: "translation (mm)",
      series: names.map((n, i) => ({ label: n, color: COLORS[i], ys: m(i) })) });
    drawPlot($("plot-rotation"), { xs, ylabel: "rotation (deg)",
      series: ["pitch", "roll", "yaw"].map((n, i) => ({ label: n, color: COLORS[i + 3], ys: m(i + 3) })) });
    const thr = S.config.fd_threshold;
    const fd = pts.map((p) => p.fd);
    const marks = pts.filter((p) => typeof p.fd === "number" && p.fd > thr).map((p) => ({ x: p.v, y: p.fd }));
    drawPlot($("plot-fd"), { xs, ylabel: "framewise displacement (mm)", ymin: 0,
      series: [{ label: "FD", color: "#e2e8f0", ys: fd }], threshold: { y: thr, label: `threshold ${thr} mm` },
      marks });
    const last = pts.length ? pts[pts.length - 1] : null;
    text($("fd-now"), last && typeof last.fd === "number" ? `FD ${last.fd.toFixed(3)} mm at volume ${last.v}` : "");
    text($("fd-above"), `${marks.length} of ${pts.length} shown above ${thr} mm`);
  }

  // ---- quality: the per-volume QA traces, the maps, the censored counts ----------------------------------------
  const QA_REASONS = ["spike", "slice", "outliers", "motion"];
  function renderQA() {
    const pts = S.points;
    const withQa = pts.filter((p) => p.qa);
    const xs = withQa.length ? xsOf(pts) : [];
    const q = (k) => pts.map((p) => (p.qa && typeof p.qa[k] === "number" ? p.qa[k] : null));
    const cens = withQa.filter((p) => p.qa.c);
    const vmarks = cens.map((p) => p.v);
    const marksOf = (k) => cens.filter((p) => typeof p.qa[k] === "number").map((p) => ({ x: p.v, y: p.qa[k] }));
    const empty = S.points.length ? "no QA in this run's frames" : "no data yet";
    drawPlot($("plot-dvars"), { xs, ylabel: "DVARS (standardized)", empty, vmarks, marks: marksOf("sd"),
      series: [{ label: "std DVARS", color: "#60a5fa", ys: q("sd") }] });
    drawPlot($("plot-gs"), { xs, ylabel: "global signal", empty, vmarks, marks: marksOf("gs"),
      series: [{ label: "global", color: "#34d399", ys: q("gs") }] });
    drawPlot($("plot-outliers"), { xs, ylabel: "outlier voxels (fraction)", empty, vmarks, marks: marksOf("of"), ymin: 0,
      series: [{ label: "outliers", color: "#fbbf24", ys: q("of") }] });
    const last = withQa.length ? withQa[withQa.length - 1] : null;
    text($("qa-now"), last ? `volume ${last.v}: DVARS ${num(last.qa.dv, 1)} (std ${num(last.qa.sd, 2)}) · ` +
      `outliers ${num(typeof last.qa.of === "number" ? 100 * last.qa.of : null, 2)} %` +
      (last.qa.c ? ` · CENSORED (${last.qa.r.join(", ")})` : "") : "");
    text($("qa-censored-now"), withQa.length ? `${cens.length} of ${withQa.length} shown censored` : "");
    const M = S.qaMaps;
    const img = $("qa-maps");
    setImage(img, M ? M.img : null, M ? `QA maps at volume ${M.v}` : "");
    setData(img, "volume", M && M.v !== null ? String(M.v) : "");
    setData(img, "seq", M && M.q !== null ? String(M.q) : "");
    text($("qa-maps-caption"), M
      ? `volume ${num(M.v)} · axial slices z = ${(M.slices || []).join(", ") || "–"} · mean tSNR in the mask ` +
        `${num(M.tsnr_mean, 1)} — top: mean EPI with the mask outlined; bottom: tSNR (scale at the right)`
      : "QA maps: none yet (the service sends them every few volumes)");
    renderQACounts();
  }
  function renderQACounts() {
    const Q = S.qa;
    const dl = $("qa-counts");
    const rows = [];
    const row = (key, label, v, cls) => {
      const r = el("div", "count" + (typeof v === "number" && v > 0 && key !== "volumes" && key !== "tsnr" ? " alert" : ""));
      const dd = el("dd", cls || "", v === null || v === undefined ? "–" : String(v));
      dd.dataset.value = v === null || v === undefined ? "" : String(v);
      r.dataset.key = key;
      r.append(el("dt", "", label), dd);
      rows.push(r);
    };
    if (Q) {
      row("censored", "censored (all reasons)", Q.censored);
      const by = Q.by_reason || {};
      for (const k of [...QA_REASONS, ...Object.keys(by).filter((k) => !QA_REASONS.includes(k)).sort()]) {
        row("reason:" + k, "  " + k, typeof by[k] === "number" ? by[k] : 0);
      }
      row("volumes", "volumes checked", Q.volumes);
      row("tsnr", "mean tSNR in the mask", typeof Q.tsnr_mean === "number" ? Number(Q.tsnr_mean.toFixed(1)) : null);
    }
    dl.replaceChildren(...rows);
    dl.dataset.count = String(rows.length);
    text($("qa-note"), Q ? "a censored volume is still shown, but kept out of the online fit and the trials"
      : "the service's status carries no QA counts (a service from before QA)");
  }

  let lastStats = 0;
  function renderLatency() {
    const pts = S.points;
    const xs = xsOf(pts);
    const stages = [...(S.config.stages || []), "total"];
    const series = stages.map((k) => ({ label: k === "total" ? "file→sent" : k, color: STAGE_COLORS[k] || "#ccc",
      ys: pts.map((p) => (p.s && typeof p.s[k] === "number" ? Math.max(p.s[k], 0.001) : null)),
      width: k === "total" ? 2 : 1.2 }));
    series.push({ label: "sent→dashboard", color: STAGE_COLORS.wire, ys: pts.map((p) => (typeof p.wire === "number" ? Math.max(p.wire, 0.001) : null)) });
    const pl = S.pageLatency;
    series.push({ label: "sent→page", color: STAGE_COLORS.page, xs: pl.map((r) => r.v), ys: pl.map((r) => Math.max(r.ms, 0.001)), dots: true });
    const fl = S.flips.filter((f) => typeof f.v === "number");
    if (fl.length) series.push({ label: "file→screen", color: STAGE_COLORS.screen, xs: fl.map((f) => f.v), ys: fl.map((f) => f.e2e), dots: true });
    drawPlot($("plot-latency"), { xs, series, log: true, logFloor: 0.001, ylabel: "ms (log)" });
    const t = now();
    if (t - lastStats < 400 && pts.length > 50) return;  // the table at most 2.5 times a second
    lastStats = t;
    const rows = stages.map((k) => [k === "total" ? "file ready → sent" : k, pts.map((p) => (p.s ? p.s[k] : null))]);
    rows.push(["sent → dashboard", pts.map((p) => p.wire)]);
    rows.push(["sent → page updated", pl.map((r) => r.ms)]);
    rows.push(["file ready → on screen (flip acks)", S.flips.map((f) => f.e2e)]);
    const tb = $("latency-table");
    tb.replaceChildren();
    const head = el("tr");
    head.append(el("th", "", "stage"), el("th", "", "p50 ms"), el("th", "", "p99 ms"), el("th", "", "n"));
    tb.append(head);
    for (const [name, vals] of rows) {
      const tr = el("tr");
      const n = vals.filter((v) => typeof v === "number").length;
      tr.append(el("td", "", name), el("td", "num", num(pct(vals, 0.5), 2)), el("td", "num", num(pct(vals, 0.99), 2)),
        el("td", "num", String(n)));
      tb.append(tr);
    }
    text($("latency-note"), S.info.runs
      ? "on screen: the displays' flip acks, read from the run records (they are not on the published stream)"
      : "on-screen latency comes from the displays' flip acks, which are not on the published stream: start the dashboard with --runs to show it");
  }

  function renderFeedback() {
    const pts = S.points;
    const xs = xsOf(pts);
    const tp = S.trialPoints.filter((t) => typeof t.fb === "number");
    const any = pts.some((p) => typeof p.fb === "number") || tp.length;
    drawPlot($("plot-feedback"), { xs: any ? xs : [], ylabel: "neurofeedback (r with target)",
      empty: "no neurofeedback target set", series: [
        { label: "per volume", color: "#34d399", ys: pts.map((p) => p.fb) },
        { label: "per trial", color: "#fbbf24", xs: tp.map((t) => t.v), ys: tp.map((t) => t.fb), dots: true },
      ] });
    const last = pts.length ? pts[pts.length - 1].fb : null;
    text($("feedback-now"), typeof last === "number" ? "now " + last.toFixed(3) : "");
  }

  function setImage(img, src, alt) {
    if (!src) { img.removeAttribute("src"); img.classList.add("empty"); img.alt = alt || ""; return null; }
    img.classList.remove("empty");
    img.alt = alt || "";
    if (img.getAttribute("src") === src) return null;
    img.src = src;
    return img.decode ? img.decode() : null;
  }

  function renderFaces() {
    const L = S.latest;
    const img = $("face-volume");
    const p = L ? setImage(img, L.img, `decoded face, volume ${L.v}`) : setImage(img, null);
    img.dataset.volume = L && L.v !== null ? String(L.v) : "";
    img.dataset.seq = L && L.q !== null ? String(L.q) : "";
    text($("face-volume-caption"), L ? `volume ${num(L.v)} · frame ${num(L.q)}` : "volume –");
    const last = S.trials.length ? S.trials[S.trials.length - 1] : null;
    setImage($("face-trial"), last ? last.img : null, "decoded face of the last trial");
    $("face-trial").dataset.trial = last && last.q !== null ? String(last.q) : "";
    text($("face-trial-caption"), last ? `trial ${last.trial ?? "–"} · ${last.trial_type || ""}` : "trial –");
    setImage($("face-stimulus"), last ? last.stim_url : null, "the trial's stimulus");
    text($("face-stimulus-caption"), last && last.stim_id ? "stimulus " + last.stim_id + (last.stim_url ? "" : " (no image: --stimuli)") : "stimulus –");
    const tg = S.target;
    setImage($("face-target"), tg ? tg.url : null, "the neurofeedback target");
    text($("face-target-caption"), tg ? "target " + tg.name : "no target");
    // the strip: figures kept by frame, only the new ones made (each new image is decoded once)
    const film = $("film");
    const want = new Set(S.film.map((f) => String(f.q)));
    for (const fig of [...film.children]) if (!want.has(fig.dataset.q)) fig.remove();
    const have = new Set([...film.children].map((fig) => fig.dataset.q));
    for (const f of S.film) {
      if (have.has(String(f.q))) continue;
      const fig = el("figure");
      fig.dataset.q = String(f.q);
      const im = el("img");
      im.src = f.img;
      im.alt = `volume ${f.v}`;
      fig.append(im, el("figcaption", "", String(f.v)));
      film.append(fig);
    }
    setData(film, "count", String(film.childElementCount));
    return p;
  }

  function renderTrials() {
    const box = $("trials");
    box.replaceChildren();
    for (const t of S.trials.slice().reverse()) {
      const fig = el("figure", "trial");
      const pair = el("div", "pair");
      const dec = el("img");
      if (t.img) dec.src = t.img; else dec.classList.add("empty");
      dec.alt = "decoded";
      pair.append(dec);
      if (t.stim_url) {
        const st = el("img");
        st.src = t.stim_url;
        st.alt = "stimulus";
        pair.append(st);
      }
      fig.append(pair);
      const cap = `${t.trial ?? "–"} ${t.trial_type || ""}` + (typeof t.fb === "number" ? ` · r ${t.fb.toFixed(2)}` : "");
      fig.append(el("figcaption", "", cap));
      fig.title = t.stim_id || "";
      box.append(fig);
    }
    box.dataset.count = String(S.trials.length);
  }

  function renderProblems(all) {
    const ul = $("problems");
    const shown = Number(ul.dataset.lastId || 0);
    if (all || !S.problems.length || S.problems[0].id > shown + 1 || Number(ul.dataset.count || 0) > S.problems.length) {
      ul.replaceChildren();
      ul.dataset.lastId = "0";
    }
    const from = Number(ul.dataset.lastId || 0);
    for (const pr of S.problems) {
      if (pr.id <= from) continue;
      const li = el("li", "problem " + (pr.src || ""));
      const when = new Date(1000 * pr.t).toLocaleTimeString();
      li.append(el("span", "when", when), el("span", "kind", pr.kind), el("span", "what", pr.text));
      ul.prepend(li);
      ul.dataset.lastId = String(pr.id);
    }
    while (ul.childElementCount > S.config.problems_kept) ul.lastElementChild.remove();
    ul.dataset.count = String(ul.childElementCount);
    text($("problems-empty"), ul.childElementCount ? "" : "no problems so far");
  }

  function kvTable(box, obj) {
    box.replaceChildren();
    for (const [k, v] of Object.entries(obj || {})) {
      const row = el("div", "kv-row");
      row.append(el("span", "k", k), el("span", "v", Array.isArray(v) ? v.join(", ") : v === null ? "–" : String(v)));
      box.append(row);
    }
    box.dataset.count = String(box.childElementCount);
  }

  function renderSummary() {
    const box = $("summary");
    if (S.end) {
      text($("summary-title"), `run ended: ${S.end.reason || "–"}`);
      kvTable($("summary-table"), S.end.summary);
      box.dataset.ended = "1";
    } else {
      text($("summary-title"), "the run's summary appears here when it ends");
      $("summary-table").replaceChildren();
      box.dataset.ended = "";
    }
    const extra = S.statusExtra || {};
    kvTable($("status-extra"), extra);
    text($("status-extra-title"), Object.keys(extra).length ? "other fields of the status message" : "");
  }

  function runRow(r) {
    const tr = el("tr");
    const a = el("a", "", r.run_id);
    a.href = "#/runs/" + encodeURIComponent(r.run_id);
    const td = el("td");
    td.append(a);
    td.title = (r.created || "") + (r.ended ? " – " + r.ended : "");
    tr.append(td, el("td", "", r.state || "–"), el("td", "num", num(r.volumes_ok)), el("td", "num", num(r.volumes_failed)),
      el("td", "num", num(r.trials)), el("td", "num", num(r.latency_p50_ms, 1)), el("td", "num", num(r.latency_p99_ms, 1)));
    if (r.run_id === S.runId) tr.classList.add("current");
    return tr;
  }
  function runsHead() {
    const tr = el("tr");
    for (const h of ["run", "state", "ok", "failed", "trials", "p50 ms", "p99 ms"]) tr.append(el("th", "", h));
    return tr;
  }
  function renderRuns() {
    const tb = $("runs-table");
    tb.replaceChildren(runsHead(), ...S.runs.map(runRow));
    tb.dataset.count = String(S.runs.length);
    text($("runs-note"), S.info.runs ? (S.runsNote || (S.runs.length ? "" : "no runs recorded yet"))
      : "start the dashboard with --runs (the service's runs folder) to list the session's runs");
  }

  // ---- service liveness ------------------------------------------------------------------------------------
  setInterval(() => {
    const pill = $("service");
    if (!S.lastMessage) { text(pill, "service: no message yet"); pill.className = "pill warn"; document.body.dataset.service = "none"; return; }
    const age = (now() - S.lastMessage) / 1000;
    const silent = age > 3.5;
    text(pill, silent ? `service: silent for ${formatDuration(age)}` : "service: live");
    pill.className = "pill " + (silent ? (S.end ? "info" : "bad") : "ok");
    document.body.dataset.service = silent ? "silent" : "live";
  }, 1000);

  // ---- earlier runs --------------------------------------------------------------------------------------------
  function currentView() {
    const h = location.hash || "#/";
    return h.startsWith("#/runs/") ? "run" : "live";
  }
  async function showRun(runId) {
    const view = $("run-view");
    text($("rv-title"), "run " + runId + " (loading)");
    view.dataset.run = "";
    let d;
    try {
      const r = await fetch("/api/runs/" + encodeURIComponent(runId), { credentials: "same-origin" });
      if (!r.ok) throw new Error(r.status === 404 ? "no such run" : "HTTP " + r.status);
      d = await r.json();
    } catch (err) {
      text($("rv-title"), `run ${runId}: ${err.message}`);
      return;
    }
    text($("rv-title"), `run ${d.run_id} · ${d.state || "–"} · ${d.created || ""}` + (d.reason ? ` · ${d.reason}` : ""));
    kvTable($("rv-summary"), d.summary);
    const pts = d.points || [];
    const xs = pts.map((p) => p.v);
    const thr = S.config.fd_threshold;
    drawPlot($("rv-motion"), { xs, ylabel: "motion (mm, deg)", series: [0, 1, 2, 3, 4, 5].map((i) => ({
      label: ["x", "y", "z", "pitch", "roll", "yaw"][i], color: COLORS[i], ys: pts.map((p) => (p.m ? p.m[i] : null)) })) });
    drawPlot($("rv-fd"), { xs, ylabel: "FD (mm)", ymin: 0, series: [{ label: "FD", color: "#e2e8f0", ys: pts.map((p) => p.fd) }],
      threshold: { y: thr, label: `threshold ${thr} mm` },
      marks: pts.filter((p) => typeof p.fd === "number" && p.fd > thr).map((p) => ({ x: p.v, y: p.fd })) });
    const fl = (d.flips || []).filter((f) => typeof f.v === "number");
    drawPlot($("rv-latency"), { xs, log: true, logFloor: 0.001, ylabel: "ms (log)", series: [
      { label: "file→sent", color: STAGE_COLORS.total, ys: pts.map((p) => (p.s ? p.s.total : null)) },
      { label: "motion", color: STAGE_COLORS.motion, ys: pts.map((p) => (p.s ? p.s.motion : null)) },
      { label: "decode", color: STAGE_COLORS.decode, ys: pts.map((p) => (p.s ? p.s.decode : null)) },
      { label: "file→screen", color: STAGE_COLORS.screen, xs: fl.map((f) => f.v), ys: fl.map((f) => f.e2e), dots: true },
    ] });
    drawPlot($("rv-feedback"), { xs: pts.some((p) => typeof p.fb === "number") ? xs : [], ylabel: "neurofeedback",
      empty: "no neurofeedback in this run", series: [{ label: "per volume", color: "#34d399", ys: pts.map((p) => p.fb) }] });
    const ul = $("rv-problems");
    ul.replaceChildren(...(d.problems || []).slice(-200).reverse().map((pr) => {
      const li = el("li", "problem");
      li.append(el("span", "kind", pr.kind), el("span", "what", pr.text));
      return li;
    }));
    const tt = $("rv-trials");
    const head = el("tr");
    for (const h of ["trial", "type", "stimulus", "volumes", "feedback"]) head.append(el("th", "", h));
    tt.replaceChildren(head, ...(d.trials || []).map((t) => {
      const tr = el("tr");
      tr.append(el("td", "", t.trial || "–"), el("td", "", t.trial_type || "–"), el("td", "", t.stim_id || "–"),
        el("td", "", `${t.first_volume}–${t.last_volume}`), el("td", "num", t.feedback || "–"));
      return tr;
    }));
    text($("rv-counts"), `${d.counts.ok} volumes ok, ${d.counts.discarded} discarded, ${d.counts.errors} errors, intake: ` +
      Object.entries(d.counts.intake).map(([k, v]) => `${k} ${v}`).join(", ") + `; ${fl.length} flip acks`);
    view.dataset.run = d.run_id;
    view.dataset.points = String(pts.length);
  }
  function route() {
    const h = location.hash || "#/";
    const run = h.startsWith("#/runs/") ? decodeURIComponent(h.slice(7)) : null;
    $("live").hidden = !!run;
    $("run-view").hidden = !run;
    document.body.dataset.view = run ? "run" : "live";
    if (run) showRun(run); else mark("all");
  }
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => mark("all"));

  route();
  connect();
})();
