// The stream list: polls /api/streams once a second and shows each
// stream's state, producers, consumers and links. No framework, nothing
// fetched from anywhere but this server.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
// Credentials are masked here, in the page only; the API keeps urls exact.
const mask = (u) => String(u).replace(/(\/\/[^:@\/\s]+):[^@\/\s]+@/, "$1:***@");
const q = encodeURIComponent;

let rtspPort = "";
const previous = new Map(); // producer key -> [bytes, time], for bitrates
const open = new Set(); // <details> the user opened

function ago(iso) {
  if (!iso) return "";
  let s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  return h ? `${h}h${m}m` : m ? `${m}m${s}s` : `${s}s`;
}

function rate(key, bytes) {
  const now = Date.now();
  const p = previous.get(key);
  previous.set(key, [bytes, now]);
  if (!p || now <= p[1] || bytes < p[0]) return "";
  return `${Math.round(((bytes - p[0]) * 8) / (now - p[1]))} kbit/s`;
}

function details(id, summary, body) {
  return `<details data-id="${esc(id)}"${open.has(id) ? " open" : ""}><summary>${summary}</summary>${body}</details>`;
}

function producer(name, i, p) {
  const state = p.state === "backoff" && p.next_retry_at ? `backoff (retry ${new Date(p.next_retry_at).toLocaleTimeString()})` : p.state;
  const bits = [
    p.pid ? `pid ${p.pid}` : "",
    p.started_at && (p.state === "running" || p.state === "starting") ? `up ${ago(p.started_at)}` : "",
    p.restarts ? `${p.restarts} restarts` : "",
    p.codecs && p.codecs.length ? p.codecs.join(", ") : "",
    rate(`${name}/${i}`, p.bytes),
  ].filter(Boolean).join(" · ");
  const err = p.last_error ? `<div class="error">${esc(p.last_error)}</div>` : "";
  const tail = p.stderr_tail && p.stderr_tail.length
    ? details(`${name}/${i}/stderr`, "stderr", `<pre>${esc(p.stderr_tail.join("\n"))}</pre>`) : "";
  return `<div class="producer ${esc(p.state)}"><div><span class="state ${esc(p.state)}">${esc(state)}</span> <code>${esc(mask(p.url))}</code></div>
    <div class="muted">${esc(bits)}</div>${err}${tail}</div>`;
}

function consumer(c) {
  return `<div class="consumer">${esc(c.protocol)} ${esc(c.remote_addr || "")} <span class="muted">· ${c.bytes} bytes · ${c.drops} drops</span></div>`;
}

function card(name, s) {
  const host = location.hostname;
  const links = [
    rtspPort ? `<a href="rtsp://${host}:${rtspPort}/${q(name)}">RTSP</a>` : "",
    `<a href="api/stream.flv?src=${q(name)}">HTTP-FLV</a>`,
    `<a href="api/stream.m3u8?src=${q(name)}">HLS (TS)</a>`,
    `<a href="api/stream.m3u8?src=${q(name)}&amp;mp4">HLS (fMP4)</a>`,
    `<a href="api/stream.mp4?src=${q(name)}">MP4</a>`,
    `<a href="api/frame.jpeg?src=${q(name)}">snapshot</a>`,
    `<a href="stream.html?src=${q(name)}&amp;mode=webrtc">WebRTC</a>`,
  ].filter(Boolean).join("");
  // A thumbnail only of a running stream: it comes from the stream's
  // latest keyframe, and must not start a camera just for this page.
  const slot = Math.floor(Date.now() / 10000);
  const thumb = s.state === "running"
    ? `<img class="thumb" alt="" src="api/frame.jpeg?src=${q(name)}&amp;width=160&amp;cache=10s&amp;t=${slot}">` : "";
  const consumers = (s.consumers || []).filter((c) => !c.internal);
  // Starting, but every source waits to retry: say so, with the time.
  const retries = (s.producers || []).map((p) => p.next_retry_at).filter(Boolean).sort();
  const stuck = s.state === "starting" && retries.length &&
    (s.producers || []).every((p) => p.state === "backoff" || p.state === "idle");
  const state = stuck ? "backoff" : (s.state || "");
  const stateText = stuck ? `backoff (retry ${new Date(retries[0]).toLocaleTimeString()})` : state;
  return `<section class="stream" data-name="${esc(name)}">
    <h2>${esc(name)} <span class="state ${esc(state)}">${esc(stateText)}</span>
      <span class="actions"><a href="stream.html?src=${q(name)}"><button>Play</button></a>
      <button class="danger" data-delete="${esc(name)}">Delete</button></span></h2>
    ${thumb}
    ${(s.producers || []).map((p, i) => producer(name, i, p)).join("") || '<div class="muted">no sources: publish to it</div>'}
    ${consumers.length ? consumers.map(consumer).join("") : '<div class="muted">no viewers</div>'}
    <div class="links">${links}</div></section>`;
}

async function refresh() {
  try {
    const r = await fetch("api/streams", { cache: "no-store" });
    const list = await r.json();
    if (!r.ok) throw new Error(list.error || r.status);
    document.querySelectorAll("details[data-id]").forEach((d) => (d.open ? open.add(d.dataset.id) : open.delete(d.dataset.id)));
    $("#streams").innerHTML = Object.entries(list).map(([n, s]) => card(n, s)).join("") || '<p class="muted">No streams yet.</p>';
    $("#status").textContent = "";
  } catch (e) {
    $("#status").textContent = `cannot reach the server: ${e.message}`;
  }
}

async function apiError(r) {
  try { return (await r.json()).error || r.statusText; } catch { return r.statusText; }
}

$("#streams").addEventListener("click", async (ev) => {
  const name = ev.target.dataset && ev.target.dataset.delete;
  if (!name || !confirm(`Delete stream ${name}? Its viewers are disconnected.`)) return;
  const r = await fetch(`api/streams?src=${q(name)}`, { method: "DELETE" });
  if (!r.ok) alert(await apiError(r));
  refresh();
});

$("#add-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const srcs = f.src.value.split("\n").map((s) => s.trim()).filter(Boolean);
  const query = [`name=${q(f.name.value.trim())}`, ...srcs.map((s) => `src=${q(s)}`)].join("&");
  const r = await fetch(`api/streams?${query}`, { method: "PUT" });
  if (r.ok) {
    $("#add-error").textContent = "";
    f.reset();
  } else {
    $("#add-error").textContent = await apiError(r);
  }
  refresh();
});

fetch("api").then((r) => r.json()).then((v) => {
  $("#version").textContent = `v${v.streamvisor}`;
  rtspPort = ((v.rtsp && v.rtsp.listen) || "").replace(/^.*:/, "");
});
refresh();
setInterval(refresh, 1000);
