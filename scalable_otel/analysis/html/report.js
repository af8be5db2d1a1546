(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("run-data").textContent);
  var PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
    "#ff9da7", "#bab0ac", "#86bcb6", "#8cd17d", "#f1ce63", "#a0cbe8", "#ffbe7d", "#d4a6c8",
    "#499894", "#79706e", "#d37295", "#b6992d", "#fabfd2"];
  var WORKER_PALETTE = ["#0969da", "#bc4c00", "#1a7f37", "#8250df", "#bf3989", "#0a7b83",
    "#9a6700", "#57606a", "#cf222e", "#4d2d00"];
  var full = {x0: 0, x1: Math.max(data.t_end || 0, 1e-3)};
  var view = {x0: full.x0, x1: full.x1};

  function color(i, palette) {
    palette = palette || PALETTE;
    if (i < palette.length) { return palette[i]; }
    return "hsl(" + ((i * 137.508) % 360).toFixed(1) + ",55%,55%)";
  }
  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, k)) { node.setAttribute(k, attrs[k]); }
    }
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function text(parent, x, y, content, attrs) {
    var node = el("text", attrs || {}, parent);
    node.setAttribute("x", x);
    node.setAttribute("y", y);
    node.textContent = content;
    return node;
  }
  function short(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }
  function tip(node, content) { el("title", {}, node).textContent = content; }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function message(box, content) {
    var p = document.createElement("p");
    p.className = "empty";
    p.textContent = content;
    box.appendChild(p);
  }
  function fmtDur(s) {
    if (s === null || s === undefined || !isFinite(s)) { return "–"; }
    if (s === 0) { return "0 s"; }
    if (s < 1e-3) { return (s * 1e6).toFixed(0) + " µs"; }
    if (s < 1) { return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + " ms"; }
    if (s < 60) { return s.toFixed(s < 10 ? 3 : 2) + " s"; }
    var m = Math.floor(s / 60);
    if (m < 60) { return m + " min " + (s - 60 * m).toFixed(1) + " s"; }
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmtClock(t, step) {
    var span = view.x1 - view.x0;
    if (view.x1 < 60 || step < 1) {
      var digits = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step) - 1e-9));
      return t.toFixed(digits) + " s";
    }
    var s = Math.round(t);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (view.x1 < 3600 && span < 3600) { return m + ":" + pad(sec); }
    return h + ":" + pad(m) + ":" + pad(sec);
  }
  function fmtBytes(b) {
    if (!isFinite(b)) { return "–"; }
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 || b >= 100 ? b.toFixed(0) : b.toFixed(1)) + " " + units[i];
  }
  var STEPS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5,
    10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  function timeTicks(x0, x1, count) {
    var span = Math.max(x1 - x0, 1e-9), step = STEPS[STEPS.length - 1];
    for (var i = 0; i < STEPS.length; i++) {
      if (span / STEPS[i] <= count) { step = STEPS[i]; break; }
    }
    var ticks = [];
    for (var t = Math.ceil(x0 / step - 1e-9) * step; t <= x1 + 1e-9; t += step) {
      ticks.push(Math.abs(t) < 1e-12 ? 0 : t);
    }
    return {ticks: ticks, step: step};
  }
  function niceStep(max, count) {
    var raw = max / Math.max(count, 1), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
  }
  function chartWidth(box) { return Math.max(560, Math.floor(box.clientWidth || 960)); }
  var clipSeq = 0;
  function clip(svg, x, y, w, h) {
    var id = "clip-" + (++clipSeq);
    var path = el("clipPath", {id: id}, el("defs", {}, svg));
    el("rect", {x: x, y: y, width: w, height: h}, path);
    return "url(#" + id + ")";
  }
  function timeAxis(svg, left, width, top, bottom, tickY, above) {
    var t = timeTicks(view.x0, view.x1, Math.max(2, Math.floor(width / 90)));
    var grid = el("g", {"class": "grid"}, svg), axis = el("g", {"class": "axis"}, svg);
    t.ticks.forEach(function (v) {
      var x = left + (v - view.x0) / (view.x1 - view.x0) * width;
      el("line", {x1: x, x2: x, y1: top, y2: bottom}, grid);
      text(axis, x, above ? tickY - 4 : tickY + 12, fmtClock(v, t.step),
        {"text-anchor": "middle", "class": "muted"});
    });
    el("line", {x1: left, x2: left + width, y1: tickY, y2: tickY}, axis);
  }
  function resetButtons() {
    var zoomed = view.x0 !== full.x0 || view.x1 !== full.x1;
    var buttons = document.querySelectorAll(".reset-zoom");
    for (var i = 0; i < buttons.length; i++) { buttons[i].hidden = !zoomed; }
  }
  // One drag at a time, across every time chart: {svg, left, width, start, rect}.
  var drag = null;
  function dragX(ev) {
    var r = drag.svg.getBoundingClientRect();
    return Math.max(drag.left, Math.min(drag.left + drag.width, ev.clientX - r.left));
  }
  window.addEventListener("mousemove", function (ev) {
    if (!drag) { return; }
    var x = dragX(ev);
    drag.rect.setAttribute("x", Math.min(drag.start, x));
    drag.rect.setAttribute("width", Math.abs(x - drag.start));
  });
  window.addEventListener("mouseup", function (ev) {
    if (!drag) { return; }
    var x = dragX(ev), a = Math.min(drag.start, x), b = Math.max(drag.start, x);
    var left = drag.left, width = drag.width;
    if (drag.rect.parentNode) { drag.rect.parentNode.removeChild(drag.rect); }
    drag = null;
    if (b - a < 5) { return; }
    var span = view.x1 - view.x0;
    var x0 = view.x0 + (a - left) / width * span, x1 = view.x0 + (b - left) / width * span;
    view = {x0: x0, x1: Math.max(x1, x0 + 1e-6)};
    drawTimeCharts();
  });
  function zoomable(svg, left, width, top, bottom) {
    svg.addEventListener("mousedown", function (ev) {
      if (ev.button !== 0) { return; }
      drag = {svg: svg, left: left, width: width};
      drag.start = dragX(ev);
      drag.rect = el("rect", {"class": "zoom-rect", x: drag.start, y: top, width: 0,
        height: bottom - top}, svg);
      ev.preventDefault();
    });
    svg.addEventListener("dblclick", function () {
      view = {x0: full.x0, x1: full.x1};
      drawTimeCharts();
    });
  }

  function drawLegend() {
    var box = document.getElementById("legend");
    clear(box);
    var used = {}, statuses = {}, bars = data.bars;
    for (var i = 0; i < bars.task.length; i++) {
      used[bars.task[i]] = true;
      statuses[bars.status[i]] = true;
    }
    var shown = 0;
    function taskItem(i, into) {
      if (!used[i]) { return; }
      if (shown++ >= 40) { return; }
      var item = document.createElement("span");
      item.className = "item";
      var sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = color(i);
      item.appendChild(sw);
      item.appendChild(document.createTextNode(data.tasks[i]));
      into.appendChild(item);
    }
    if (data.groups && data.groups.length) {
      // a row per distributed.span block: the task names submitted in it
      data.groups.forEach(function (g) {
        var row = document.createElement("div");
        row.className = "legend-group";
        var name = document.createElement("span");
        name.className = "group-name";
        name.textContent = g.label;
        row.appendChild(name);
        g.tasks.forEach(function (i) { taskItem(i, row); });
        box.appendChild(row);
      });
    } else {
      data.tasks.forEach(function (name, i) { taskItem(i, box); });
    }
    if (shown > 40) {
      var more = document.createElement("span");
      more.textContent = "… and " + (shown - 40) + " more task names";
      box.appendChild(more);
    }
    if (data.busy) { statuses.busy = true; }
    [["busy", "attempts running at once (all attempts)", "none", "#57606a4d"],
      ["failed", "failed", "2px solid #cf222e", "#fff"],
      ["lost", "lost (retried or worker gone)", "1px dashed #57606a", "#eee"],
      ["cancelled", "cancelled", "1px solid #57606a", "#eee"],
      ["unfinished", "no end recorded", "1px dashed #0969da", "#eef"]]
      .forEach(function (m) {
        if (!statuses[m[0]]) { return; }
        m = m.slice(1);
        var item = document.createElement("span");
        item.className = "item";
        var sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.border = m[1];
        sw.style.background = m[2];
        item.appendChild(sw);
        item.appendChild(document.createTextNode(m[0]));
        box.appendChild(item);
      });
  }

  function workerLabel(w) {
    if (w.name !== undefined && w.name !== null) {
      return w.address ? "worker " + w.name : w.name;
    }
    return w.address || "?";
  }

  // When not every attempt is drawn: each worker's busy threads over time, from all of
  // them, as a shaded area in a band under its lanes. Returns the number of workers drawn.
  function drawBusy(parent, rowY, laneH, bandH, sx) {
    var width = data.busy.width;
    data.busy.rows.forEach(function (r) {
      var w = data.workers[r.w], lanes = Math.max(1, w.lanes || 1);
      var top = Math.max(1, w.nthreads || 0, Math.max.apply(null, r.v));
      var h = bandH, base = rowY[r.w] + lanes * laneH + bandH;
      var pts = [sx(0).toFixed(1) + "," + base];
      for (var b = 0; b < r.v.length; b++) {
        var y = (base - r.v[b] / top * h).toFixed(1);
        pts.push(sx(b * width).toFixed(1) + "," + y, sx((b + 1) * width).toFixed(1) + "," + y);
      }
      pts.push(sx(r.v.length * width).toFixed(1) + "," + base);
      var area = el("polygon", {"class": "busy-band", points: pts.join(" "),
        "data-worker": w.address || ""}, parent);
      tip(area, workerLabel(w) + "\nattempts running at once, averaged over " +
        fmtDur(width) + ": at most " + Math.max.apply(null, r.v).toFixed(2) +
        (w.nthreads ? " of " + w.nthreads + " thread(s)" : ""));
    });
    return data.busy.rows.length;
  }

  function drawTimeline() {
    var box = document.getElementById("timeline");
    clear(box);
    var bars = data.bars, n = bars.key.length, workers = data.workers;
    if ((!n && !data.busy) || !workers.length) {
      message(box, "No task attempt was recorded on a worker.");
      box.setAttribute("data-drawn-tasks", "0");
      return;
    }
    var width = chartWidth(box), left = 170, right = 18, top = 26, bottom = 26;
    var plotW = width - left - right;
    var lanes = 0;
    workers.forEach(function (w) { lanes += Math.max(1, w.lanes || 1); });
    var laneH = Math.max(2, Math.min(16, Math.floor(1600 / lanes)));
    var gap = lanes > 150 ? 2 : 8;
    var bandH = data.busy ? Math.max(6, Math.min(18, 2 * laneH)) : 0;
    var rowY = [], y = top;
    workers.forEach(function (w) {
      rowY.push(y);
      y += Math.max(1, w.lanes || 1) * laneH + bandH + gap;
    });
    var height = y + bottom;
    var svg = el("svg", {width: width, height: height, "class": "timeline-svg",
      role: "img", "aria-label": "Timeline of task attempts per worker"}, box);
    var span = view.x1 - view.x0;
    function sx(t) { return left + (t - view.x0) / span * plotW; }
    var clipRef = clip(svg, left, 0, plotW, height);
    var rows = el("g", {"class": "rows"}, svg);
    workers.forEach(function (w, i) {
      var h = Math.max(1, w.lanes || 1) * laneH + bandH;
      el("rect", {x: left, y: rowY[i] - gap / 2, width: plotW, height: h + gap,
        fill: i % 2 ? "#ffffff" : "#f6f8fa"}, rows);
      if (w.added !== undefined || w.ended !== undefined) {
        var a = sx(w.added !== undefined ? w.added : full.x0);
        var b = sx(w.ended !== undefined ? w.ended : full.x1);
        a = Math.max(left, a);
        b = Math.min(left + plotW, b);
        if (b > a) {
          el("rect", {x: a, y: rowY[i] - 1, width: b - a, height: h + 2, fill: "#ddf4ff",
            "fill-opacity": 0.5}, rows);
        }
      }
      var label = text(rows, left - 8, rowY[i] + Math.min(h, 24) / 2 + 4,
        short(workerLabel(w), 24), {"text-anchor": "end"});
      tip(label, (w.name !== undefined ? "worker " + w.name + "\n" : "") + (w.address || "") +
        (w.nthreads ? "\n" + w.nthreads + " thread(s)" : "") +
        (w.end ? "\n" + w.end + (w.reason ? ": " + w.reason : "") : ""));
      if (w.end === "crashed" && w.ended !== undefined) {
        var cx = sx(w.ended);
        if (cx >= left && cx <= left + plotW) {
          var mark = text(rows, cx, rowY[i] + Math.min(h, 24) / 2 + 4, "✕",
            {"text-anchor": "middle", fill: "#cf222e", "font-weight": "bold"});
          tip(mark, "worker crashed" + (w.reason ? ": " + w.reason : ""));
        }
      }
    });
    timeAxis(svg, left, plotW, top - 4, height - bottom + 4, height - bottom + 4, false);
    timeAxis(svg, left, plotW, top - 4, top - 4, top - 4, true);
    var busyWorkers = data.busy ? drawBusy(el("g", {"class": "busy", "clip-path": clipRef}, svg),
      rowY, laneH, bandH, sx) : 0;
    var g = el("g", {"class": "bars", "clip-path": clipRef}, svg);
    var marks = el("g", {"class": "marks", "clip-path": clipRef}, svg);
    var drawn = 0;
    // the critical path's attempts: their place on the path, by key and attempt
    var onPath = {}, pathAt = [];
    (data.critical || []).forEach(function (link, j) { onPath[link[0] + "\u0000" + link[1]] = j; });
    for (var i = 0; i < n; i++) {
      var w = bars.w[i], status = bars.status[i];
      var x0 = sx(bars.start[i]), x1 = sx(bars.end[i]);
      var yy = rowY[w] + bars.lane[i] * laneH;
      var cls = "task-bar " + status;
      var step = onPath[bars.key[i] + "\u0000" + bars.attempt[i]];
      if (step !== undefined) {
        cls += " critical";
        pathAt[step] = [x0, x1, yy + laneH / 2];
      }
      var rect = el("rect", {
        "class": cls, x: x0.toFixed(2), y: yy + (laneH > 4 ? 1 : 0),
        width: Math.max(1, x1 - x0).toFixed(2), height: Math.max(1, laneH - (laneH > 4 ? 2 : 0)),
        fill: color(bars.task[i]), "data-key": bars.key[i], "data-attempt": bars.attempt[i],
        "data-task": data.tasks[bars.task[i]], "data-status": status}, g);
      var wk = data.workers[w];
      var lines = [data.tasks[bars.task[i]], bars.key[i],
        "worker: " + workerLabel(wk) + (wk.address && wk.name !== undefined ?
          " (" + wk.address + ")" : ""),
        "attempt " + bars.attempt[i] + " · " + status,
        "start +" + bars.start[i].toFixed(3) + " s, end +" + bars.end[i].toFixed(3) + " s",
        "duration " + fmtDur(bars.duration[i] !== null ? bars.duration[i] :
          bars.end[i] - bars.start[i]) + (bars.queue[i] !== null ?
          " · queue wait " + fmtDur(bars.queue[i]) : "")];
      if (bars.args[i] !== null) { lines.push("args: " + bars.args[i]); }
      if (bars.error[i] !== null) { lines.push("error: " + bars.error[i]); }
      tip(rect, lines.join("\n"));
      if (status === "failed") {
        var mx = Math.max(x1, x0 + 1);
        el("path", {"class": "fail-mark", d: "M" + (mx - 4).toFixed(1) + "," + yy + "h8l-4,5z"},
          marks);
      }
      drawn++;
    }
    // a line from each link's end to the next link's start
    var links = el("g", {"class": "critical-links", "clip-path": clipRef}, svg);
    var highlighted = 0;
    for (var j = 0; j < pathAt.length; j++) {
      if (!pathAt[j]) { continue; }
      highlighted++;
      var next = pathAt[j + 1];
      if (next) {
        el("path", {"class": "critical-link", d: "M" + pathAt[j][1].toFixed(1) + "," +
          pathAt[j][2].toFixed(1) + "L" + next[0].toFixed(1) + "," + next[2].toFixed(1)}, links);
      }
    }
    box.setAttribute("data-critical-bars", String(highlighted));
    box.setAttribute("data-drawn-tasks", String(drawn));
    box.setAttribute("data-busy-workers", String(busyWorkers));
    zoomable(svg, left, plotW, top - 4, height - bottom + 4);
  }

  function drawResources() {
    var box = document.getElementById("resources");
    clear(box);
    var series = data.resources;
    if (!series.length) {
      message(box, "No resource samples were recorded.");
      box.setAttribute("data-drawn-workers", "0");
      return;
    }
    var legend = document.createElement("div");
    legend.className = "legend";
    series.forEach(function (s) {
      var wk = data.workers[s.w];
      var item = document.createElement("span");
      item.className = "item";
      var sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = color(s.w, WORKER_PALETTE);
      item.appendChild(sw);
      item.appendChild(document.createTextNode(workerLabel(wk) +
        (wk.address && wk.name !== undefined ? " · " + wk.address : "")));
      legend.appendChild(item);
    });
    box.appendChild(legend);
    var drawnWorkers = {};
    [["cpu", "CPU %", function (v) { return v.toFixed(0) + "%"; }],
      ["mem", "Memory (RSS)", fmtBytes]].forEach(function (m) {
      var metric = m[0];
      var width = chartWidth(box), left = 170, right = 18, top = 12, bottom = 24, h = 170;
      var plotW = width - left - right, height = top + h + bottom;
      var max = 0, points = 0;
      series.forEach(function (s) {
        points += s[metric][1].length;
        s[metric][1].forEach(function (v) { if (v > max) { max = v; } });
      });
      if (!points) {
        message(box, "No " + m[1] + " samples were recorded.");
        return;
      }
      if (metric === "cpu") { max = Math.max(max, 100); }
      if (max <= 0) { max = 1; }
      var step;
      if (metric === "mem") {
        var unit = 1;
        while (unit < Math.pow(1024, 4) && max >= unit * 1024) { unit *= 1024; }
        step = Math.max(1, niceStep(max / unit, 4) * unit);
      } else {
        step = niceStep(max, 4);
      }
      var top_ = Math.ceil(max / step - 1e-9) * step;
      var svg = el("svg", {width: width, height: height, "class": "resource-chart " + metric,
        role: "img", "aria-label": m[1] + " per worker"}, box);
      function sy(v) { return top + h - v / top_ * h; }
      var span = view.x1 - view.x0;
      function sx(t) { return left + (t - view.x0) / span * plotW; }
      var axis = el("g", {"class": "axis"}, svg), grid = el("g", {"class": "grid"}, svg);
      for (var v = 0; v <= top_ + 1e-9; v += step) {
        el("line", {x1: left, x2: left + plotW, y1: sy(v), y2: sy(v)}, grid);
        text(axis, left - 6, sy(v) + 4, m[2](v), {"text-anchor": "end", "class": "muted"});
      }
      text(axis, 8, top + h / 2, m[1], {"class": "muted"});
      timeAxis(svg, left, plotW, top, top + h, top + h, false);
      var g = el("g", {"clip-path": clip(svg, left, 0, plotW, height)}, svg);
      series.forEach(function (s) {
        var t = s[metric][0], vals = s[metric][1];
        if (!t.length) { return; }
        var pts = [];
        for (var i = 0; i < t.length; i++) {
          pts.push(sx(t[i]).toFixed(1) + "," + sy(vals[i]).toFixed(1));
        }
        var c = color(s.w, WORKER_PALETTE), wk = data.workers[s.w];
        var line = el("polyline", {"class": "resource-line " + metric, points: pts.join(" "),
          stroke: c, "data-worker": wk.address || "", "data-points": t.length}, g);
        var peak = Math.max.apply(null, vals);
        tip(line, workerLabel(wk) + " " + (wk.address || "") + "\n" + m[1] + ": " +
          t.length + " samples, peak " + m[2](peak));
        if (t.length <= 60) {
          for (var j = 0; j < t.length; j++) {
            var dot = el("circle", {cx: sx(t[j]).toFixed(1), cy: sy(vals[j]).toFixed(1), r: 2.5,
              fill: c}, g);
            tip(dot, workerLabel(wk) + " at +" + t[j].toFixed(1) + " s: " + m[2](vals[j]));
          }
        }
        drawnWorkers[s.w] = true;
      });
      zoomable(svg, left, plotW, top, top + h);
    });
    box.setAttribute("data-drawn-workers", String(Object.keys(drawnWorkers).length));
  }

  function drawDurations() {
    var box = document.getElementById("durations");
    clear(box);
    var rows = data.durations;
    if (!rows.length) {
      message(box, "No task ran to completion or raised, so there are no durations yet.");
      box.setAttribute("data-drawn-task-names", "0");
      return;
    }
    var width = chartWidth(box), left = 220, right = 40, top = 8, rowH = 30, bottom = 30;
    var plotW = width - left - right, height = top + rows.length * rowH + bottom;
    var lo = Infinity, hi = 0;
    rows.forEach(function (r) {
      if (r.max > hi) { hi = r.max; }
      r.dots.forEach(function (v) { if (v > 0 && v < lo) { lo = v; } });
    });
    if (!isFinite(lo)) { lo = hi || 1e-3; }
    if (hi <= 0) { hi = 1e-3; }
    var log = hi / lo > 100;
    var d0, d1, sx;
    if (log) {
      d0 = Math.floor(Math.log10(lo));
      d1 = Math.ceil(Math.log10(hi));
      if (d1 === d0) { d1 += 1; }
      sx = function (v) {
        return left + (Math.log10(Math.max(v, Math.pow(10, d0))) - d0) / (d1 - d0) * plotW;
      };
    } else {
      var st = niceStep(hi, 6);
      d0 = 0;
      d1 = Math.ceil(hi / st - 1e-9) * st;
      sx = function (v) { return left + v / d1 * plotW; };
    }
    var svg = el("svg", {width: width, height: height, "class": "durations-svg", role: "img",
      "aria-label": "Distribution of task durations per task name"}, box);
    var grid = el("g", {"class": "grid"}, svg), axis = el("g", {"class": "axis"}, svg);
    var ticks = [];
    if (log) {
      for (var e = d0; e <= d1; e++) { ticks.push(Math.pow(10, e)); }
    } else {
      var st2 = niceStep(hi, 6);
      for (var v = 0; v <= d1 + 1e-12; v += st2) { ticks.push(v); }
    }
    var axisY = top + rows.length * rowH;
    ticks.forEach(function (v) {
      el("line", {x1: sx(v), x2: sx(v), y1: top, y2: axisY}, grid);
      text(axis, sx(v), axisY + 14, fmtDur(v), {"text-anchor": "middle", "class": "muted"});
    });
    el("line", {x1: left, x2: left + plotW, y1: axisY, y2: axisY}, axis);
    text(axis, left + plotW, axisY + 27, log ? "duration (log scale)" : "duration",
      {"text-anchor": "end", "class": "muted"});
    rows.forEach(function (r, i) {
      var g = el("g", {"class": "duration-row", "data-task": r.task, "data-count": r.n}, svg);
      var cy = top + i * rowH + rowH / 2, c = color(r.color);
      var label = text(g, left - 8, cy + 4, short(r.task, 30) + " (" + r.n + ")",
        {"text-anchor": "end"});
      tip(label, r.task);
      el("line", {x1: sx(r.min), x2: sx(r.max), y1: cy, y2: cy, stroke: "#57606a"}, g);
      [r.min, r.max].forEach(function (v) {
        el("line", {x1: sx(v), x2: sx(v), y1: cy - 6, y2: cy + 6, stroke: "#57606a"}, g);
      });
      var boxEl = el("rect", {"class": "duration-box", x: sx(r.q1), y: cy - 9,
        width: Math.max(1, sx(r.q3) - sx(r.q1)), height: 18, fill: c, "fill-opacity": 0.35,
        stroke: c}, g);
      el("line", {x1: sx(r.median), x2: sx(r.median), y1: cy - 9, y2: cy + 9, stroke: "#1f2328",
        "stroke-width": 2}, g);
      r.dots.forEach(function (v, j) {
        var jitter = ((j * 7919) % 13 - 6) * 0.9;
        el("circle", {"class": "duration-dot", cx: sx(v).toFixed(1), cy: (cy + jitter).toFixed(1),
          r: 1.8, fill: c, "fill-opacity": 0.8}, g);
      });
      tip(boxEl, r.task + "\n" + r.n + " attempts\nmin " + fmtDur(r.min) + " · median " +
        fmtDur(r.median) + " · p95 " + fmtDur(r.p95) + " · max " + fmtDur(r.max));
    });
    if (data.durations_hidden) {
      message(box, data.durations_hidden + " more task names with less total time are not drawn.");
    }
    box.setAttribute("data-drawn-task-names", String(rows.length));
  }

  function drawTimeCharts() {
    drawTimeline();
    drawResources();
    resetButtons();
  }
  function drawAll() {
    drawLegend();
    drawTimeCharts();
    drawDurations();
  }
  var buttons = document.querySelectorAll(".reset-zoom");
  for (var b = 0; b < buttons.length; b++) {
    buttons[b].addEventListener("click", function () {
      view = {x0: full.x0, x1: full.x1};
      drawTimeCharts();
    });
  }
  var resizeTimer = null, lastWidth = document.body.clientWidth;
  window.addEventListener("resize", function () {
    if (document.body.clientWidth === lastWidth) { return; }
    lastWidth = document.body.clientWidth;
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { drawTimeCharts(); drawDurations(); }, 150);
  });
  drawAll();
})();
