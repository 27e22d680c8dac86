// The player: /api/stream.mp4 (progressive fMP4) into Media Source
// Extensions, our own few lines instead of a vendored player. Native HLS
// where MSE is missing (Safari on iOS). Stays near the live edge.
// `mode=webrtc`: WebRTC instead (POST /api/webrtc), H.264 as it comes and
// Opus or G.711 audio; the lowest latency, no AAC.
"use strict";

const params = new URLSearchParams(location.search);
const src = params.get("src") || "";
const mode = params.get("mode") || "mse";
const video = document.getElementById("video");
const message = document.getElementById("message");
document.getElementById("title").textContent = src;
document.title = `${src} · streamvisor`;

const LIVE_LAG = 2.0; // seconds behind the buffered end before we jump
const KEEP = 30; // seconds of played media kept in the buffer

function show(text) {
  message.hidden = !text;
  message.textContent = text || "";
}

// Why the stream is not playing, from the API (its producers' errors).
async function explain(fallback) {
  try {
    const r = await fetch(`api/streams?src=${encodeURIComponent(src)}`, { cache: "no-store" });
    const v = await r.json();
    if (!r.ok) return v.error || fallback;
    const errs = (v.producers || []).map((p) => p.last_error).filter(Boolean);
    return errs.length ? `${fallback}: ${errs.join("; ")}` : fallback;
  } catch {
    return fallback;
  }
}

// ISO 14496-12 boxes at the top level of `buf`: [type, start, end].
function boxes(buf) {
  const out = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let at = 0;
  while (at + 8 <= buf.length) {
    const size = dv.getUint32(at);
    const type = String.fromCharCode(...buf.subarray(at + 4, at + 8));
    if (size < 8 || at + size > buf.length) break;
    out.push([type, at, at + size]);
    at += size;
  }
  return out;
}

// RFC 6381 codecs of an init segment: avc1.PPCCLL from its avcC, and
// mp4a.40.2 for an AAC track, flac for a FLAC one (the server's G.711 as
// FLAC; "flac" is the MSE codecs name, as isoflac's `fLaC` entry) or opus
// for an `Opus` one.
function codecs(init) {
  const find = (name) => {
    for (let i = 0; i + 4 <= init.length; i++) {
      if (init[i] === name.charCodeAt(0) && String.fromCharCode(...init.subarray(i, i + 4)) === name) return i;
    }
    return -1;
  };
  const list = [];
  const avcc = find("avcC");
  if (avcc >= 0) {
    const hex = (b) => b.toString(16).padStart(2, "0");
    list.push(`avc1.${hex(init[avcc + 5])}${hex(init[avcc + 6])}${hex(init[avcc + 7])}`);
  }
  const hvcc = find("hvcC");
  if (hvcc >= 0) list.push(hvc1(init.subarray(hvcc + 4)));
  if (find("mp4a") >= 0) list.push("mp4a.40.2");
  else if (find("fLaC") >= 0) list.push("flac");
  else if (find("Opus") >= 0) list.push("opus");
  return list.join(",");
}

// ISO 14496-15 Annex E.3: hvc1.<space><profile>.<compatibility flags,
// bits reversed, hex>.<L|H><level>.<constraint bytes, trailing zeros cut>
// from an HEVCDecoderConfigurationRecord.
function hvc1(rec) {
  const space = ["", "A", "B", "C"][rec[1] >> 6];
  const tier = rec[1] & 0x20 ? "H" : "L";
  const profile = rec[1] & 0x1f;
  let compat = 0;
  for (let i = 0; i < 4; i++) compat |= rec[2 + i] << (24 - 8 * i);
  let reversed = 0;
  for (let i = 0; i < 32; i++) if (compat & (1 << i)) reversed |= 1 << (31 - i);
  const constraints = Array.from(rec.subarray(6, 12));
  while (constraints.length && constraints[constraints.length - 1] === 0) constraints.pop();
  const parts = [`hvc1`, `${space}${profile}`, (reversed >>> 0).toString(16), `${tier}${rec[12]}`];
  for (const b of constraints) parts.push(b.toString(16).toUpperCase());
  return parts.join(".");
}

// `h264Only`: this browser cannot decode the stream's own video (H.265 on
// a browser without an HEVC decoder): the server then sends the stream's
// shared H.264 transcode, which runs only while such viewers watch.
async function playMse(h264Only = false) {
  document.getElementById("mode").textContent = h264Only ? "MSE (fMP4, H.264 transcode)" : "MSE (fMP4)";
  const fit = h264Only ? "&video=h264" : "";
  const r = await fetch(`api/stream.mp4?src=${encodeURIComponent(src)}${fit}`, { cache: "no-store" });
  if (!r.ok) {
    let e = r.statusText;
    try { e = (await r.json()).error || e; } catch {}
    throw new Error(e);
  }
  const reader = r.body.getReader();
  let pending = new Uint8Array(0);
  let sb = null;
  const queue = [];
  const ms = new MediaSource();
  video.src = URL.createObjectURL(ms);
  await new Promise((ok) => ms.addEventListener("sourceopen", ok, { once: true }));
  const pump = () => {
    if (!sb || sb.updating || !queue.length) return;
    sb.appendBuffer(queue.shift());
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended");
    const joined = new Uint8Array(pending.length + value.length);
    joined.set(pending);
    joined.set(value, pending.length);
    // Hand MSE whole boxes only.
    const bx = boxes(joined);
    const end = bx.length ? bx[bx.length - 1][2] : 0;
    const whole = joined.subarray(0, end);
    pending = joined.slice(end);
    if (!whole.length) continue;
    if (!sb) {
      const moov = bx.find((b) => b[0] === "moov");
      if (!moov) continue;
      const type = `video/mp4; codecs="${codecs(whole.subarray(0, moov[2]))}"`;
      if (!MediaSource.isTypeSupported(type)) {
        if (!h264Only && /hvc1|hev1/.test(type)) {
          reader.cancel();
          URL.revokeObjectURL(video.src);
          return playMse(true);
        }
        throw new Error(`this browser cannot play ${type}`);
      }
      sb = ms.addSourceBuffer(type);
      sb.mode = "segments";
      sb.addEventListener("updateend", () => {
        // Drop what was played long ago, then go on.
        const t = video.currentTime;
        if (!sb.updating && sb.buffered.length && t - sb.buffered.start(0) > KEEP * 2) {
          sb.remove(sb.buffered.start(0), t - KEEP);
          return;
        }
        pump();
      });
    }
    queue.push(whole);
    pump();
  }
}

// WebRTC: a recvonly offer to POST /api/webrtc (go2rtc's JSON form), the
// answer, and then the connection until it fails, closes, or its video
// stops for 10 s. We are ICE-lite: the offer needs no candidates, the
// server learns this browser's address from its checks.
async function playWebRtc() {
  document.getElementById("mode").textContent = "WebRTC";
  let iceServers = [];
  try {
    const info = await (await fetch("api", { cache: "no-store" })).json();
    iceServers = (info.webrtc && info.webrtc.ice_servers) || [];
  } catch {}
  const pc = new RTCPeerConnection({ iceServers });
  try {
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const media = new MediaStream();
    pc.ontrack = (e) => media.addTrack(e.track);
    video.srcObject = media;
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch(`api/webrtc?src=${encodeURIComponent(src)}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }),
    });
    const v = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(v.error || r.statusText);
    await pc.setRemoteDescription({ type: "answer", sdp: v.sdp });
    const started = Date.now();
    let last = -1;
    let moved = Date.now();
    for (;;) {
      await new Promise((ok) => setTimeout(ok, 1000));
      const s = pc.connectionState;
      if (s === "failed" || s === "closed") throw new Error(`the WebRTC connection ${s}`);
      if (s !== "connected" && Date.now() - started > 15000) {
        throw new Error("WebRTC did not connect within 15 s (UDP or TCP port 8555 blocked?)");
      }
      if (video.currentTime !== last) {
        last = video.currentTime;
        moved = Date.now();
      } else if (s === "connected" && Date.now() - moved > 10000) {
        throw new Error("no video for 10 s");
      }
    }
  } finally {
    pc.close();
    video.srcObject = null;
  }
}

// Keep near the live edge: a player that fell behind (a stall, a
// background tab) jumps forward instead of playing old media.
setInterval(() => {
  const b = video.buffered;
  if (!b.length) return;
  const end = b.end(b.length - 1);
  if (video.currentTime < b.start(b.length - 1) || end - video.currentTime > LIVE_LAG) {
    video.currentTime = Math.max(b.start(b.length - 1), end - 0.5);
  }
  if (video.paused) video.play().catch(() => {});
}, 1000);

async function main() {
  if (!src) return show("no stream given (stream.html?src=NAME)");
  for (;;) {
    try {
      show("");
      if (mode === "webrtc") {
        if (!window.RTCPeerConnection) return show("this browser has no WebRTC");
        await playWebRtc();
      } else if (window.MediaSource) {
        await playMse();
      } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
        document.getElementById("mode").textContent = "HLS";
        video.src = `api/stream.m3u8?src=${encodeURIComponent(src)}&mp4`;
        return;
      } else {
        return show("this browser has neither Media Source Extensions nor HLS");
      }
    } catch (e) {
      show(await explain(`${src}: ${e.message}`));
    }
    await new Promise((ok) => setTimeout(ok, 3000)); // then try again
  }
}
main();
