// manyfold web console: plain JS, no dependencies, no build step.
// Safe by construction: text is written with textContent only (never innerHTML), no inline script, no eval;
// the admin token lives in the token field of this page only (never a cookie, never web storage).
"use strict";

(function () {
  var POLL_MS = 2000;          // the live view's poll interval (default)
  var WINDOW = 5;              // rates and percentiles over the last WINDOW polls
  var HISTORY = 60;            // points kept for the sparklines
  var SVG = "http://www.w3.org/2000/svg";

  var state = { info: null, experts: [], view: null, timer: null, snaps: [], series: { rps: [], queue: [], esc: [], p50: [] } };

  // -- small DOM helpers (text only) ------------------------------------------------------------
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmt(x, digits) {
    if (x === null || x === undefined || (typeof x === "number" && !isFinite(x))) return "\u2013";
    if (typeof x !== "number") return String(x);
    if (Number.isInteger(x)) return x.toLocaleString("en");
    var d = digits === undefined ? 3 : digits;
    return Math.abs(x) >= 100 ? x.toFixed(Math.min(d, 1)) : x.toFixed(d);
  }
  // a quantity that is a fraction or a time: always with its decimals (JSON writes 1.0 as 1)
  function fixed(x, digits) {
    return (typeof x === "number" && isFinite(x)) ? x.toFixed(digits === undefined ? 3 : digits) : "\u2013";
  }
  function pct(x) { return (x === null || x === undefined || !isFinite(x)) ? "\u2013" : (100 * x).toFixed(1) + "%"; }
  function setStatus(node, text, kind) {
    node.textContent = text;
    node.className = "status" + (kind ? " " + kind : "");
  }

  // -- HTTP -------------------------------------------------------------------------------------
  function request(method, path, body, auth) {
    var opts = { method: method, headers: {}, credentials: "omit", cache: "no-store" };
    if (body instanceof FormData) {
      opts.body = body;
    } else if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    if (auth) opts.headers["Authorization"] = "Bearer " + auth;
    return fetch(path, opts).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = { error: "not_json", message: t.slice(0, 200) }; }
        return { status: r.status, ok: r.ok, data: data };
      });
    }, function (err) {
      return { status: 0, ok: false, data: { error: "network", message: String(err) } };
    });
  }
  function why(res) {
    var d = res.data || {};
    return res.status + (d.error ? " " + d.error : "") + (d.message ? ": " + d.message : "");
  }

  // -- views --------------------------------------------------------------------------------------
  var VIEWS = ["playground", "experts", "live", "admin"];
  function show(view) {
    if (VIEWS.indexOf(view) < 0) view = "playground";
    state.view = view;
    VIEWS.forEach(function (v) {
      $("view-" + v).hidden = v !== view;
      var tab = $("tab-" + v);
      if (v === view) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
    });
    if (location.hash !== "#" + view) history.replaceState(null, "", "#" + view);
    if (view === "experts" || view === "admin") loadExperts();
    if (view === "live") startPolling(); else stopPolling();
  }

  // -- header / info --------------------------------------------------------------------------------
  function loadInfo() {
    return request("GET", "/v1/console/info").then(function (res) {
      if (!res.ok) { $("assembly").textContent = "server answered " + why(res); return; }
      var i = state.info = res.data;
      var parts = [i.assembly || "(an assembly object)", i.version !== null && i.version !== undefined ? "v" + i.version : "",
                   i.ready ? (i.modality === "image" ? "takes images" : "takes texts") : "loading"];
      $("assembly").textContent = parts.filter(Boolean).join(" \u00b7 ");
      var images = i.modality === "image";
      $("image-row").hidden = !images;
      $("text-row").hidden = images;
      renderCalibration();
    });
  }

  // -- playground ----------------------------------------------------------------------------------
  function bars(node, rows, max, marked) {
    clear(node);
    rows.forEach(function (r) {
      var row = el("div", "bar-row" + (marked && marked.indexOf(r[0]) >= 0 ? " used" : ""));
      row.appendChild(el("span", "bar-name", r[0]));
      var track = el("span", "bar-track");
      var fill = el("span", "bar-fill");
      fill.style.width = Math.max(0, Math.min(100, 100 * r[1] / (max || 1))).toFixed(1) + "%";
      track.appendChild(fill);
      row.appendChild(track);
      row.appendChild(el("span", "bar-value", r.length > 2 ? r[2] : fixed(r[1])));
      node.appendChild(row);
    });
    if (!rows.length) node.appendChild(el("p", "muted", "none"));
  }

  function predict(ev) {
    if (ev) ev.preventDefault();
    var images = state.info && state.info.modality === "image";
    var escalate = $("escalate").checked;
    var body, shown;
    if (images) {
      var f = $("image").files[0];
      if (!f) { setStatus($("predict-status"), "choose an image file first", "error"); return; }
      body = new FormData();
      body.append("file", f, f.name);
      body.append("escalate", escalate ? "true" : "false");
      shown = f.name;
    } else {
      var text = $("text").value;
      if (!text.trim()) { setStatus($("predict-status"), "type a text first", "error"); return; }
      body = { item: text, escalate: escalate };
      shown = text;
    }
    setStatus($("predict-status"), "asking\u2026", "busy");
    $("predict-btn").disabled = true;
    request("POST", "/v1/predict", body).then(function (res) {
      $("predict-btn").disabled = false;
      if (!res.ok) { setStatus($("predict-status"), why(res), "error"); return; }
      setStatus($("predict-status"), "answered", "ok");
      renderPrediction(res.data.predictions[0], res.data.version, shown);
    });
  }

  function renderPrediction(p, version, shown) {
    $("result").hidden = false;
    $("r-label").textContent = p.label;
    $("r-kind").textContent = p.out_of_scope ? "out of scope" : (p.escalated ? "generalist" : "experts");
    $("r-kind").className = "badge " + (p.out_of_scope ? "oos" : (p.escalated ? "esc" : "ok"));
    $("r-confidence").textContent = fixed(p.confidence);
    $("r-escalated").textContent = p.escalated ? "yes" : "no";
    $("r-reason").textContent = p.reason ? p.reason : (p.escalated ? "" : "the experts were sure enough") +
      (p.degraded ? " (degraded)" : "");
    $("r-oos").textContent = fixed(p.oos_score);
    $("r-version").textContent = version === null || version === undefined ? "\u2013" : String(version);
    var k = (state.info && state.info.top_k) || p.experts.length || 1;
    var scores = Object.keys(p.router_scores || {}).map(function (n) { return [n, p.router_scores[n]]; });
    scores.sort(function (a, b) { return b[1] - a[1]; });
    bars($("r-experts"), scores.slice(0, Math.max(k, p.experts.length)), 1, p.experts);
    var t = p.timings_ms || {};
    var order = ["queue", "encode", "route", "experts", "generalist", "total"];
    var rows = order.filter(function (s) { return s in t; }).map(function (s) { return [s, t[s], fixed(t[s], 2) + " ms"]; });
    var max = Math.max.apply(null, rows.map(function (r) { return r[1]; }).concat([1e-9]));
    bars($("r-times"), rows, max);
    $("r-input").textContent = shown;
  }

  // -- experts ---------------------------------------------------------------------------------------
  function loadExperts() {
    return request("GET", "/v1/experts").then(function (res) {
      if (!res.ok) { setStatus($("experts-status"), why(res), "error"); return; }
      state.experts = res.data;
      setStatus($("experts-status"), res.data.length + " experts", "");
      renderExperts();
      renderRemoveChoices();
    });
  }

  function kvTable(obj) {
    var t = el("table", "kv");
    var tb = el("tbody");
    Object.keys(obj || {}).forEach(function (k) {
      var v = obj[k];
      var tr = el("tr");
      tr.appendChild(el("th", null, k));
      tr.appendChild(el("td", null, typeof v === "object" && v !== null ? JSON.stringify(v) : fmt(v)));
      tb.appendChild(tr);
    });
    t.appendChild(tb);
    return t;
  }

  function renderExperts() {
    var box = $("expert-cards");
    clear(box);
    var version = state.info ? state.info.version : null;
    state.experts.forEach(function (e) {
      var c = e.card || {};
      var card = el("article", "panel card expert");
      card.setAttribute("data-expert", e.name);
      card.appendChild(el("h3", null, e.name));
      var meta = [c.domain ? "domain " + c.domain : "", e.labels.length + " labels",
                  c.size ? c.size.toLocaleString() + " parameters" : "",
                  version !== null && version !== undefined ? "in version " + version : ""];
      card.appendChild(el("p", "muted", meta.filter(Boolean).join(" \u00b7 ")));
      if (c.description) card.appendChild(el("p", null, c.description));
      var labels = el("ul", "chips");
      e.labels.forEach(function (l) { labels.appendChild(el("li", "chip", l)); });
      card.appendChild(labels);
      if (c.metrics && Object.keys(c.metrics).length) { card.appendChild(el("h4", null, "metrics")); card.appendChild(kvTable(c.metrics)); }
      if (c.lineage && Object.keys(c.lineage).length) { card.appendChild(el("h4", null, "lineage")); card.appendChild(kvTable(c.lineage)); }
      box.appendChild(card);
    });
  }

  function renderCalibration() {
    var tb = $("calibration").querySelector("tbody");
    clear(tb);
    var i = state.info || {};
    var rows = {};
    ["encoder", "generalist", "top_k", "oos_label", "labels", "max_chars"].forEach(function (k) { if (k in i) rows[k] = i[k]; });
    Object.keys(i.thresholds || {}).forEach(function (k) { rows["threshold " + k] = i.thresholds[k]; });
    var cal = i.calibration || {};
    Object.keys(cal).forEach(function (k) { if (k !== "curve") rows[k] = cal[k]; });
    var t = kvTable(rows);
    var body = t.querySelector("tbody");
    while (body.firstChild) tb.appendChild(body.firstChild);
    curve($("calibration-curve"), cal.curve, cal.escalation_budget);
  }

  // the validation curve of the escalation policy: accuracy against the escalation budget, the chosen one marked
  function curve(node, c, chosen) {
    clear(node);
    if (!c || !c.budget || !c.accuracy || c.budget.length < 2) { node.hidden = true; return; }
    node.hidden = false;
    var w = 300, h = 120, pad = 28;
    var acc = c.accuracy.filter(function (v) { return v !== null; });
    var lo = Math.min.apply(null, acc), hi = Math.max.apply(null, acc);
    if (hi - lo < 1e-6) { lo -= 0.05; hi += 0.05; }
    var bmax = Math.max.apply(null, c.budget) || 1;
    function X(b) { return pad + (w - pad - 6) * b / bmax; }
    function Y(a) { return h - pad + 6 - (h - pad) * (a - lo) / (hi - lo); }
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "validation accuracy against the escalation budget");
    var pts = [];
    c.budget.forEach(function (b, j) { if (c.accuracy[j] !== null) pts.push(X(b).toFixed(1) + "," + Y(c.accuracy[j]).toFixed(1)); });
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("class", "spark-line");
    svg.appendChild(line);
    var axis = document.createElementNS(SVG, "polyline");
    axis.setAttribute("points", pad + ",6 " + pad + "," + (h - pad + 6) + " " + (w - 6) + "," + (h - pad + 6));
    axis.setAttribute("class", "axis");
    svg.appendChild(axis);
    if (typeof chosen === "number") {
      var m = document.createElementNS(SVG, "line");
      m.setAttribute("x1", X(chosen)); m.setAttribute("x2", X(chosen));
      m.setAttribute("y1", 6); m.setAttribute("y2", h - pad + 6);
      m.setAttribute("class", "marker");
      svg.appendChild(m);
    }
    [[pad - 3, 12, "end", fmt(hi, 3)], [pad - 3, h - pad + 6, "end", fmt(lo, 3)],
     [pad, h - 6, "start", "0"], [w - 6, h - 6, "end", pct(bmax) + " budget"]].forEach(function (a) {
      var tx = document.createElementNS(SVG, "text");
      tx.setAttribute("x", a[0]); tx.setAttribute("y", a[1]); tx.setAttribute("text-anchor", a[2]);
      tx.textContent = a[3];
      svg.appendChild(tx);
    });
    node.appendChild(svg);
    node.appendChild(el("figcaption", "muted small", "validation accuracy against the escalation budget (the share of " +
      "items that may go to the generalist); dashed: the budget chosen"));
  }

  // -- live traffic ----------------------------------------------------------------------------------
  function startPolling() {
    if (state.timer !== null) return;
    state.snaps = [];  // a window never spans the time the view was closed
    $("poll-s").textContent = String(POLL_MS / 1000);
    $("window-s").textContent = String(WINDOW * POLL_MS / 1000);
    poll();
    state.timer = setInterval(function () { if (!document.hidden) poll(); }, POLL_MS);
  }
  function stopPolling() {
    if (state.timer !== null) { clearInterval(state.timer); state.timer = null; }
  }

  function sum(obj) { var s = 0; Object.keys(obj || {}).forEach(function (k) { s += obj[k]; }); return s; }

  // the q-quantile of the observations between two cumulative histograms (linear inside a bucket)
  function quantile(le, now, before, q) {
    var d = now.map(function (c, i) { return c - (before ? before[i] || 0 : 0); });
    var total = d[d.length - 1];
    if (!(total > 0)) return null;
    var rank = q * total;
    for (var i = 0; i < d.length; i++) {
      if (d[i] >= rank) {
        var lo = i === 0 ? 0 : le[i - 1], hi = le[i];
        if (hi === null) return lo;  // beyond the last finite bucket: its lower bound
        var prev = i === 0 ? 0 : d[i - 1];
        var inBucket = d[i] - prev;
        return lo + (hi - lo) * (inBucket > 0 ? (rank - prev) / inBucket : 1);
      }
    }
    return null;
  }

  function poll() {
    request("GET", "/v1/console/stats").then(function (res) {
      if (!res.ok) { setStatus($("live-status"), why(res), "error"); return; }
      setStatus($("live-status"), "", "");
      var s = res.data;
      state.snaps.push(s);
      if (state.snaps.length > WINDOW + 1) state.snaps.shift();
      renderLive();
    });
  }

  function renderLive() {
    var snaps = state.snaps, now = snaps[snaps.length - 1], old = snaps[0];
    var dt = now.time - old.time;
    var rps = snaps.length > 1 && dt > 0 ? (sum(now.requests) - sum(old.requests)) / dt : null;
    $("live-rps").textContent = rps === null ? "\u2013" : rps.toFixed(1);
    $("live-queue").textContent = String(now.queue_depth);
    $("live-queue-more").textContent = "generalist queue " + now.generalist_queue_depth + " \u00b7 in flight " + now.in_flight;
    // escalation rate per expert over the window (since start when the window saw no traffic)
    var names = Object.keys(now.experts).sort();
    var windowed = names.some(function (n) { return now.experts[n].items > ((old.experts[n] || {}).items || 0); });
    var base = windowed && snaps.length > 1 ? old : { experts: {} };
    var items = 0, esc = 0;
    var rows = names.map(function (n) {
      var a = now.experts[n], b = base.experts[n] || { items: 0, escalated: 0 };
      var di = a.items - b.items, de = a.escalated - b.escalated;
      items += di; esc += de;
      return [n, di > 0 ? de / di : 0, di > 0 ? pct(de / di) + " of " + di : "no items"];
    });
    bars($("live-experts"), rows, 1);
    var escRate = items > 0 ? esc / items : null;
    $("live-esc").textContent = pct(escRate) + (windowed ? "" : " (since start)");
    // latency percentiles per stage over the window
    var tb = $("live-stages").querySelector("tbody");
    var p50 = null;
    clear(tb);
    ["request", "queue", "encode", "route", "experts", "generalist", "batch_total"].forEach(function (st) {
      var h = now.stages[st];
      if (!h) return;
      var hb = old.stages[st];
      var n = h.count - (hb && snaps.length > 1 ? hb.count : 0);
      var prior = n > 0 && snaps.length > 1 && hb ? hb.counts : null;
      if (!(n > 0)) { n = h.count; prior = null; }
      var tr = el("tr");
      tr.appendChild(el("th", null, st));
      [0.5, 0.9, 0.99].forEach(function (q) {
        var v = quantile(h.le, h.counts, prior, q);
        tr.appendChild(el("td", null, v === null ? "\u2013" : fixed(1e3 * v, 1)));
      });
      tr.appendChild(el("td", null, String(Math.round(n)) + (prior ? "" : " (since start)")));
      tb.appendChild(tr);
      if (st === "request") p50 = prior ? quantile(h.le, h.counts, prior, 0.5) : null;
    });
    $("live-p50").textContent = p50 === null ? "\u2013" : fixed(1e3 * p50, 1) + " ms";
    push("rps", rps === null ? 0 : rps);
    push("queue", now.queue_depth);
    push("esc", escRate === null ? 0 : escRate);
    push("p50", p50 === null ? 0 : 1e3 * p50);
    spark($("spark-p50"), state.series.p50, "request p50 latency");
    spark($("spark-rps"), state.series.rps, "requests per second");
    spark($("spark-queue"), state.series.queue, "queue depth");
    spark($("spark-esc"), state.series.esc, "escalation rate");
  }

  function push(key, v) {
    var a = state.series[key];
    a.push(v);
    if (a.length > HISTORY) a.shift();
  }

  function spark(node, values, label) {
    clear(node);
    var w = 120, h = 32;
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label + ", last " + values.length + " polls");
    var max = Math.max.apply(null, values.concat([1e-9]));
    var pts = values.map(function (v, i) {
      var x = values.length > 1 ? (w * i) / (values.length - 1) : 0;
      return x.toFixed(1) + "," + (h - 2 - (h - 4) * v / max).toFixed(1);
    });
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    line.setAttribute("class", "spark-line");
    svg.appendChild(line);
    node.appendChild(svg);
  }

  // -- admin ----------------------------------------------------------------------------------------
  function token() { return $("token").value.trim(); }

  function logAnswer(what, res) {
    var li = el("li", res.ok ? "ok" : "error");
    var time = new Date().toTimeString().slice(0, 8);
    li.appendChild(el("span", "muted", time + " "));
    li.appendChild(el("strong", null, what));
    var d = res.data || {};
    var text = res.ok ? (res.status + " " + (d.status || "ok") +
      (d.version !== undefined && d.version !== null ? ", version " + d.version : "") +
      (d.experts ? ", experts: " + d.experts.join(", ") : "")) : why(res);
    li.appendChild(el("span", null, " \u2192 " + text));
    var log = $("admin-log");
    log.insertBefore(li, log.firstChild);
    if (res.ok) { loadInfo(); loadExperts(); }
  }

  function renderRemoveChoices() {
    var sel = $("remove-name");
    var keep = sel.value;
    clear(sel);
    state.experts.forEach(function (e) {
      var o = el("option", null, e.name);
      o.value = e.name;
      sel.appendChild(o);
    });
    if (keep) sel.value = keep;
  }

  function pairs(text, field) {
    var out = [], bad = [];
    text.split("\n").forEach(function (line, i) {
      if (!line.trim()) return;
      var at = line.indexOf(",");
      var lab = at > 0 ? line.slice(0, at).trim() : "", t = at > 0 ? line.slice(at + 1).trim() : "";
      if (!lab || !t) bad.push(i + 1); else out.push([t, lab]);
    });
    if (bad.length) throw new Error(field + ": line " + bad.slice(0, 5).join(", ") + " is not 'label, text'");
    return out;
  }

  function addExpert() {
    var what = "add expert " + $("add-name").value.trim();
    var train, val;
    try {
      train = pairs($("add-train").value, "training examples");
      val = pairs($("add-val").value, "validation examples");
    } catch (e) {
      logAnswer(what, { ok: false, status: 0, data: { error: "invalid_input", message: e.message } });
      return;
    }
    var labels = [];
    train.forEach(function (p) { if (labels.indexOf(p[1]) < 0) labels.push(p[1]); });
    var body = { name: $("add-name").value.trim(), labels: labels, train: train, val: val, kind: $("add-kind").value };
    busy("add-btn", request("POST", "/v1/experts", body, token()), what);
  }

  function removeExpert() {
    var name = $("remove-name").value;
    if (!name) { logAnswer("remove expert", { ok: false, status: 0, data: { error: "invalid_input", message: "no expert chosen" } }); return; }
    busy("remove-btn", request("DELETE", "/v1/experts/" + encodeURIComponent(name), undefined, token()), "remove expert " + name);
  }

  function reload() {
    var v = $("reload-version").value.trim();
    var body = { version: v ? Number(v) : null, wait: true };
    busy("reload-btn", request("POST", "/v1/admin/reload", body, token()), "reload " + (v ? "version " + v : "the latest version"));
  }

  function busy(id, promise, what) {
    var b = $(id);
    b.disabled = true;
    b.setAttribute("aria-busy", "true");
    promise.then(function (res) {
      b.disabled = false;
      b.removeAttribute("aria-busy");
      logAnswer(what, res);
      b.focus();
    });
  }

  // -- start -----------------------------------------------------------------------------------------
  function start() {
    VIEWS.forEach(function (v) { $("tab-" + v).addEventListener("click", function () { show(v); }); });
    $("predict-form").addEventListener("submit", predict);
    $("text").addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) predict(e);
    });
    $("image").addEventListener("change", function () {
      var f = $("image").files[0], img = $("image-preview");
      if (img.src) URL.revokeObjectURL(img.src);
      if (f) { img.src = URL.createObjectURL(f); img.hidden = false; } else { img.hidden = true; }
    });
    $("forget-token").addEventListener("click", function () { $("token").value = ""; logAnswer("forget token", { ok: true, status: 0, data: { status: "the page holds no token now" } }); });
    $("remove-btn").addEventListener("click", removeExpert);
    $("add-btn").addEventListener("click", addExpert);
    $("reload-btn").addEventListener("click", reload);
    window.addEventListener("hashchange", function () { show(location.hash.slice(1)); });
    loadInfo().then(function () { show(location.hash.slice(1) || "playground"); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
