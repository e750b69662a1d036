// The live view page: frames come as MJPEG into the <img>; the plot data and the events as Server-Sent
// Events from /events (edge/live/server.py). No framework, nothing fetched from elsewhere.
"use strict";

const PLOT_S = 20;           // seconds of ROI motion on the plot
const KEEP_S = 2 * PLOT_S;   // samples kept in the page
const MIN_SCALE_PX = 0.3;    // the plot's y range never shrinks below this (crop px)

const view = { stream: "", series: [], samples: [], events: [], dirty: true };
const $ = (id) => document.getElementById(id);

function setConn(text, cls) {
  const el = $("conn");
  el.textContent = text;
  el.className = cls;
}

function legend() {
  const box = $("legend");
  box.replaceChildren();
  for (const s of view.series) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.colour;
    item.append(swatch, s.name);
    box.append(item);
  }
  const band = document.createElement("span");
  const sw = document.createElement("i");
  sw.style.background = "rgba(255, 200, 80, 0.35)";
  band.append(sw, "event (onset to offset)");
  box.append(band);
}

function fmt(v, digits) {
  return v === null || v === undefined ? "-" : Number(v).toFixed(digits);
}

function addEventRow(ev) {
  const row = document.createElement("tr");
  row.className = "fresh event";
  row.dataset.seq = ev.seq ?? "";
  const frames = ev.onset_frame === null || ev.onset_frame === undefined ? "-"
    : `${ev.onset_frame}-${ev.apex_frame}-${ev.offset_frame}`;
  const cells = [ev.seq ?? "-", fmt(ev.onset_s, 2), ev.kind ?? "-", ev.label ?? "-", fmt(ev.confidence, 2),
    ev.duration_s === null || ev.duration_s === undefined ? "-" : Math.round(ev.duration_s * 1000),
    ev.track_id ?? "-", frames, (ev.rois || []).join(", "), fmt(ev.latency_ms, 0)];
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.textContent = String(text);
    if (i === 2) td.className = String(ev.kind);
    if (i === 8) td.className = "rois";
    row.append(td);
  });
  $("event-rows").prepend(row);
  $("event-count").textContent = `(${view.events.length})`;
}

function onUpdate(u) {
  view.stream = u.stream;
  $("stream").textContent = u.stream || "-";
  $("frame").textContent = u.frame >= 0 ? String(u.frame) : "-";
  $("fps").textContent = fmt(u.fps, 1);
  setConn(u.ended ? "stream ended" : "live", u.ended ? "ended" : "live");
  for (const s of u.roi) view.samples.push(s);
  const tEnd = view.samples.length ? view.samples[view.samples.length - 1][1] : 0;
  while (view.samples.length && view.samples[0][1] < tEnd - KEEP_S) view.samples.shift();
  for (const ev of u.events) {
    view.events.push(ev);
    addEventRow(ev);
  }
  view.dirty = true;
}

function draw() {
  requestAnimationFrame(draw);
  if (!view.dirty) return;
  view.dirty = false;
  const canvas = $("plot");
  const w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 44, right = 8, top = 18, bottom = 22;
  const pw = w - left - right, ph = h - top - bottom;
  const samples = view.samples;
  const t1 = samples.length ? Math.max(samples[samples.length - 1][1], PLOT_S) : PLOT_S;
  const t0 = t1 - PLOT_S;
  let ymax = MIN_SCALE_PX;
  for (const s of samples) if (s[1] >= t0) for (const v of s[3]) ymax = Math.max(ymax, v * 1.1);
  const x = (t) => left + ((t - t0) / PLOT_S) * pw;
  const y = (v) => top + ph - (v / ymax) * ph;
  // events of the shown stream: shaded from onset to offset, labelled
  g.font = "11px system-ui, sans-serif";
  for (const ev of view.events) {
    if (ev.stream !== view.stream || ev.onset_s === null || ev.offset_s === null) continue;
    if (ev.offset_s < t0 || ev.onset_s > t1) continue;
    const xa = Math.max(left, x(ev.onset_s)), xb = Math.min(left + pw, x(ev.offset_s));
    g.fillStyle = "rgba(255, 200, 80, 0.35)";
    g.fillRect(xa, top, Math.max(2, xb - xa), ph);
    g.fillStyle = "#ffd070";
    g.fillText(`${ev.kind}${ev.label && ev.label !== ev.kind ? " " + ev.label : ""}`, xa + 2, top - 5);
  }
  // axes and grid
  g.strokeStyle = "#2c3036";
  g.fillStyle = "#9aa0a8";
  g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = (ymax * k) / 4;
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(left + pw, y(v)); g.stroke();
    g.fillText(v.toFixed(2), 4, y(v) + 4);
  }
  for (let t = Math.ceil(t0 / 5) * 5; t <= t1; t += 5) {
    g.beginPath(); g.moveTo(x(t), top); g.lineTo(x(t), top + ph); g.stroke();
    g.fillText(`${t} s`, x(t) - 8, h - 6);
  }
  // one line per ROI group
  view.series.forEach((series, i) => {
    g.strokeStyle = series.colour;
    g.lineWidth = 1.5;
    g.beginPath();
    let started = false;
    for (const s of samples) {
      if (s[1] < t0) continue;
      if (!started) { g.moveTo(x(s[1]), y(s[3][i])); started = true; } else g.lineTo(x(s[1]), y(s[3][i]));
    }
    g.stroke();
  });
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("hello", (e) => {
    const hello = JSON.parse(e.data);
    view.series = hello.series;
    // a (re)connection: the server sends what it keeps from the start again
    view.samples = [];
    view.events = [];
    $("event-rows").replaceChildren();
    legend();
    setConn("live", "live");
  });
  source.addEventListener("update", (e) => onUpdate(JSON.parse(e.data)));
  source.onerror = () => setConn("connection lost: retrying", "lost");  // EventSource reconnects by itself
}

const img = $("frames");
img.addEventListener("error", () => {
  // the server went away (the graph stopped or the view restarted): try again in a second
  setTimeout(() => { img.src = "/stream.mjpg?t=" + Date.now(); }, 1000);
});
window.addEventListener("resize", () => { view.dirty = true; });
connect();
requestAnimationFrame(draw);
