// Shoal's dashboard: polls the admin API and draws what it sees. Plain JavaScript and canvas,
// no libraries and nothing loaded from elsewhere, so it works offline and needs no build step.
"use strict";

const params = new URLSearchParams(location.search);
const INTERVAL_MS = Math.max(250, Number(params.get("interval")) || 2000);
const HISTORY = 150; // samples kept per chart: five minutes at the default interval

// Cache statuses as /stats counts them, with the names X-Cache shows.
const STATUSES = [
  ["hits", "HIT", "#2e9e5b"],
  ["misses", "MISS", "#d9822b"],
  ["stale", "STALE", "#8e6bbf"],
  ["revalidated", "REVALIDATED", "#3a7bd5"],
  ["passes", "PASS", "#7a869a"],
  ["synthetic", "SYNTH", "#c23030"],
];

let token = sessionStorage.getItem("shoal-admin-token") || "";
const fromHash = /(?:^#|&)token=([^&]+)/.exec(location.hash);
if (fromHash) {
  token = decodeURIComponent(fromHash[1]);
  sessionStorage.setItem("shoal-admin-token", token);
  history.replaceState(null, "", location.pathname + location.search);
}

class Unauthorized extends Error {}

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(path + ": " + response.status + " " + (await response.text()));
  return response.json();
}

// ---- formatting

function rate(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 1e6) return (value / 1e6).toFixed(2) + " M";
  if (value >= 1e3) return (value / 1e3).toFixed(1) + " k";
  return value >= 10 ? value.toFixed(0) : value.toFixed(1);
}

function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return (unit === 0 ? value.toFixed(0) : value.toFixed(1)) + " " + units[unit];
}

function bits(value) {
  if (value === null || value === undefined) return "–";
  const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
  let unit = 0;
  value *= 8;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit++; }
  return value.toFixed(value >= 100 || unit === 0 ? 0 : 1) + " " + units[unit];
}

function millis(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? value.toFixed(0) + " ms" : value.toFixed(value >= 10 ? 1 : 2) + " ms";
}

function percent(value) {
  return value === null || value === undefined ? "–" : value.toFixed(1) + " %";
}

// ---- charts

class Chart {
  // series: [{ name, color }]; format: how values are shown on the axis and in the legend.
  constructor(id, series, format, fixedMax) {
    this.canvas = document.getElementById("chart-" + id);
    this.legend = document.getElementById("legend-" + id);
    this.series = series;
    this.format = format;
    this.fixedMax = fixedMax;
    this.points = []; // [time, [values...]]; a value may be null (no data)
  }

  push(time, values) {
    this.points.push([time, values]);
    if (this.points.length > HISTORY) this.points.shift();
    this.canvas.dataset.points = String(this.points.length);
    this.canvas.dataset.last = JSON.stringify(values);
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const left = 64, right = 8, top = 8, bottom = 20;
    const plotWidth = width - left - right, plotHeight = height - top - bottom;
    let max = this.fixedMax || 0;
    if (!this.fixedMax) {
      for (const [, values] of this.points) for (const v of values) if (v !== null && v > max) max = v;
      max = niceCeiling(max);
    }
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#6b7785";
    g.strokeStyle = "#e3e7ec";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let step = 0; step <= 4; step++) {
      const y = top + plotHeight - (plotHeight * step) / 4;
      g.beginPath(); g.moveTo(left, y + 0.5); g.lineTo(left + plotWidth, y + 0.5); g.stroke();
      g.fillText(this.format((max * step) / 4), left - 6, y);
    }
    const span = HISTORY * INTERVAL_MS;
    const now = this.points.length ? this.points[this.points.length - 1][0] : Date.now();
    const x = (time) => left + plotWidth - ((now - time) / span) * plotWidth;
    g.textAlign = "center";
    g.textBaseline = "top";
    for (let minutes = 0; minutes * 60000 <= span; minutes++) {
      const label = minutes === 0 ? "now" : "−" + minutes + " min";
      g.fillText(label, Math.min(Math.max(x(now - minutes * 60000), left + 16), left + plotWidth - 14), top + plotHeight + 5);
    }
    this.series.forEach((series, index) => {
      g.strokeStyle = series.color;
      g.lineWidth = 1.75;
      g.beginPath();
      let drawing = false;
      for (const [time, values] of this.points) {
        const value = values[index];
        if (value === null) { drawing = false; continue; }
        const px = x(time), py = top + plotHeight - (max > 0 ? (value / max) * plotHeight : 0);
        if (drawing) g.lineTo(px, py); else g.moveTo(px, py);
        drawing = true;
      }
      g.stroke();
    });
    const last = this.points.length ? this.points[this.points.length - 1][1] : [];
    this.legend.replaceChildren(...this.series.map((series, index) => {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = series.color;
      item.append(swatch, series.name + " " + this.format(last[index] ?? null));
      return item;
    }));
  }
}

function niceCeiling(value) {
  if (value <= 0) return 1;
  const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

const charts = {
  requests: new Chart("requests", STATUSES.map(([, name, color]) => ({ name, color })), rate),
  hit: new Chart("hit", [{ name: "hits / cacheable requests", color: "#2e9e5b" }], percent, 100),
  bandwidth: new Chart("bandwidth", [
    { name: "sent to clients", color: "#3a7bd5" },
    { name: "received from origins", color: "#d9822b" },
  ], bits),
  origin: new Chart("origin", [
    { name: "mean", color: "#3a7bd5" },
    { name: "p99", color: "#c23030" },
  ], millis),
};

// ---- tables

function fill(id, rows, empty) {
  const body = document.querySelector("#" + id + " tbody");
  const columns = document.querySelectorAll("#" + id + " thead th").length;
  if (!rows.length) {
    const cell = document.createElement("td");
    cell.colSpan = columns;
    cell.className = "empty";
    cell.textContent = empty;
    const row = document.createElement("tr");
    row.append(cell);
    body.replaceChildren(row);
    document.getElementById(id).dataset.rows = "0";
    return;
  }
  body.replaceChildren(...rows.map((cells) => {
    const row = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.append(cell);
      else if (typeof cell === "object" && cell !== null) {
        td.textContent = cell.text;
        if (cell.className) td.className = cell.className;
      } else td.textContent = String(cell);
      row.append(td);
    }
    return row;
  }));
  document.getElementById(id).dataset.rows = String(rows.length);
}

function stateBadge(state) {
  const badge = document.createElement("span");
  badge.className = "state " + state;
  badge.textContent = state;
  return badge;
}

// ---- the loop

let previous = null; // { time, stats }

function histogramDelta(now, before) {
  const buckets = now.buckets.map((count, index) => count - (before ? before.buckets[index] : 0));
  const count = buckets.reduce((a, b) => a + b, 0);
  const sum = now.sum_micros - (before ? before.sum_micros : 0);
  return { buckets, count, sum };
}

function quantileMillis(delta, bounds, q) {
  if (!delta.count) return null;
  let seen = 0;
  for (let index = 0; index < delta.buckets.length; index++) {
    seen += delta.buckets[index];
    if (seen >= q * delta.count) {
      const bound = index < bounds.length ? bounds[index] : bounds[bounds.length - 1] * 2;
      return bound / 1000;
    }
  }
  return null;
}

async function poll() {
  try {
    const [status, stats, upstreams, topUrls, countries, asns] = await Promise.all([
      api("/status"), api("/stats"), api("/upstreams"), api("/top-urls?top=10"),
      api("/report?by=country&top=10"), api("/report?by=asn&top=10"),
    ]);
    document.getElementById("login").hidden = true;
    document.getElementById("problem").hidden = true;
    const time = Date.now();
    show(time, status, stats, upstreams, topUrls, countries, asns);
    previous = { time, stats };
  } catch (error) {
    if (error instanceof Unauthorized) {
      document.getElementById("login").hidden = false;
    } else {
      const problem = document.getElementById("problem");
      problem.textContent = "Cannot read the admin API: " + error.message;
      problem.hidden = false;
    }
  }
  setTimeout(poll, INTERVAL_MS);
}

function show(time, status, stats, upstreams, topUrls, countries, asns) {
  const counters = stats.counters;
  document.getElementById("node").textContent =
    "v" + status.version + " · " + status.listen.join(", ") + " · up " + uptime(status.uptime_seconds) +
    " · config generation " + status.config_generation;
  document.getElementById("updated").textContent = "updated " + new Date(time).toLocaleTimeString();
  document.getElementById("tile-conns").textContent = String(counters.open_connections);
  document.getElementById("tile-ram").textContent =
    bytes(stats.store.bytes) + " / " + bytes(stats.store.capacity);
  document.getElementById("tile-disk").textContent =
    stats.disk ? bytes(stats.disk.bytes) + " / " + bytes(stats.disk.capacity) : "off";

  // Rates by the node's clock, which network delays (and a browser's throttled timers) do not
  // distort.
  const seconds = previous ? (stats.time_ms - previous.stats.time_ms) / 1000 : 0;
  if (seconds > 0) {
    const delta = (name) => Math.max(0, counters[name] - previous.stats.counters[name]);
    const perSecond = STATUSES.map(([key]) => delta(key) / seconds);
    charts.requests.push(time, perSecond);
    const cacheable = delta("hits") + delta("misses") + delta("stale") + delta("revalidated");
    const hitRatio = cacheable ? (100 * (delta("hits") + delta("stale") + delta("revalidated"))) / cacheable : null;
    charts.hit.push(time, [hitRatio]);
    const out = delta("bytes_sent") / seconds, received = delta("origin_bytes") / seconds;
    charts.bandwidth.push(time, [out, received]);
    const origin = histogramDelta(stats.latency.origin_first_byte, previous.stats.latency.origin_first_byte);
    const mean = origin.count ? origin.sum / origin.count / 1000 : null;
    const p99 = quantileMillis(origin, stats.latency.bounds_micros, 0.99);
    charts.origin.push(time, [mean, p99]);
    document.getElementById("tile-rps").textContent = rate(delta("requests") / seconds);
    document.getElementById("tile-hit").textContent = percent(hitRatio);
    document.getElementById("tile-out").textContent = bits(out);
    document.getElementById("tile-in").textContent = bits(received);
    document.getElementById("tile-origin").textContent = millis(p99);
  }

  const hostRows = [];
  for (const pool of upstreams) {
    for (const host of pool.hosts) {
      const check = host.last_check ? (host.last_check.passed ? "passed: " : "failed: ") + host.last_check.detail : "–";
      hostRows.push([pool.pool, host.host + (host.this_node ? " (this node)" : ""), stateBadge(host.state),
        { text: String(host.in_flight), className: "number" }, check]);
    }
  }
  fill("upstreams", hostRows, "no upstreams");
  fill("top-urls", topUrls.map((row) => [{ text: row.url, className: "url" },
    { text: String(row.requests), className: "number" }, { text: bytes(row.bytes), className: "number" }]),
    "no cacheable requests yet");
  const report = (rows) => rows.map((row) => [row.key, { text: String(row.requests), className: "number" },
    { text: bytes(row.bytes), className: "number" }]);
  fill("countries", report(countries), "needs log.geoip_country (a MaxMind database)");
  fill("asns", report(asns), "needs log.geoip_asn (a MaxMind database)");
}

function uptime(seconds) {
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.floor(seconds / 60) + " min";
  if (seconds < 172800) return Math.floor(seconds / 3600) + " h";
  return Math.floor(seconds / 86400) + " days";
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("shoal-admin-token", token);
  document.getElementById("login").hidden = true;
});
window.addEventListener("resize", () => Object.values(charts).forEach((chart) => chart.draw()));
Object.values(charts).forEach((chart) => chart.draw());
poll();
