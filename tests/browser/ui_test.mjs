// Drives Debian's Chromium (through playwright-core; no browser download)
// against a running streamvisor. Usage: node ui_test.mjs BASE_URL OUT_DIR
// Prints one JSON line of what it measured; any failed check throws.
import { chromium } from "playwright-core";
import fs from "node:fs";

const [base, outDir] = process.argv.slice(2);
const check = (ok, what) => {
  if (!ok) throw new Error(`check failed: ${what}`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
const result = {};

// Distinct colours in a 64x36 sample of the page's <video>.
const colours = (page) => page.evaluate(() => {
  const v = document.querySelector("video");
  const c = document.createElement("canvas");
  c.width = 64;
  c.height = 36;
  const ctx = c.getContext("2d");
  ctx.drawImage(v, 0, 0, 64, 36);
  const d = ctx.getImageData(0, 0, 64, 36).data;
  const seen = new Set();
  for (let i = 0; i < d.length; i += 4) seen.add(`${d[i] >> 4},${d[i + 1] >> 4},${d[i + 2] >> 4}`);
  return seen.size;
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));

  // 1. The list shows the demo stream, and the failing one with its error.
  await page.goto(`${base}/`);
  await page.waitForSelector('section.stream[data-name="demo"]', { timeout: 10000 });
  // Someone asks for the broken stream (not awaited: it fails after its
  // start timeout); its error must show in the list meanwhile.
  await page.evaluate(() => { fetch("api/stream.flv?src=broken").catch(() => {}); });
  await page.waitForFunction(
    () => /exit|error|failed|refused|No such/i.test(document.querySelector('section.stream[data-name="broken"]')?.textContent || ""),
    null,
    { timeout: 30000 },
  );
  result.broken_error = (await page.textContent('section.stream[data-name="broken"] .error')).trim();
  const t = Date.now();
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll("section.stream").length >= 50, null, { timeout: 5000 });
  result.list_ms = Date.now() - t;
  result.streams_listed = await page.evaluate(() => document.querySelectorAll("section.stream").length);

  // 2. The player plays: currentTime moves by 3 s within 10 s.
  const player = await browser.newPage({ viewport: { width: 960, height: 600 } });
  player.on("pageerror", (e) => console.error(`player error: ${e.message}`));
  await player.goto(`${base}/stream.html?src=demo`);
  await player.waitForFunction(() => document.querySelector("video").currentTime > 0, null, { timeout: 20000 });
  const t0 = await player.evaluate(() => document.querySelector("video").currentTime);
  const started = Date.now();
  await player.waitForFunction((t) => document.querySelector("video").currentTime >= t + 3, t0, { timeout: 10000 });
  result.advanced_in_ms = Date.now() - started;
  result.behind_live_s = await player.evaluate(() => {
    const v = document.querySelector("video");
    return v.buffered.length ? v.buffered.end(v.buffered.length - 1) - v.currentTime : -1;
  });
  // Not one flat colour: the test source has colour bars and motion.
  result.colours = await colours(player);
  const shot = await player.locator("video").screenshot();
  fs.writeFileSync(`${outDir}/video.png`, shot);

  // 2b. The player over WebRTC (mode=webrtc): UDP, then with UDP blocked
  // (this browser is told only our TCP candidates), which must use TCP.
  for (const [label, tcpOnly] of [["webrtc_udp", false], ["webrtc_tcp", true]]) {
    const ctx = await browser.newContext({ viewport: { width: 960, height: 600 } });
    const p = await ctx.newPage();
    p.on("pageerror", (e) => console.error(`${label} error: ${e.message}`));
    await p.addInitScript((tcpOnly) => {
      const Orig = window.RTCPeerConnection;
      window.__pcs = [];
      window.RTCPeerConnection = function (...a) {
        const pc = new Orig(...a);
        window.__pcs.push(pc);
        return pc;
      };
      window.RTCPeerConnection.prototype = Orig.prototype;
      if (!tcpOnly) return;
      const set = Orig.prototype.setRemoteDescription;
      Orig.prototype.setRemoteDescription = function (d) {
        const keep = (l) => !/^a=candidate:\S+ \d+ udp /i.test(l);
        return set.call(this, { type: d.type, sdp: d.sdp.split("\r\n").filter(keep).join("\r\n") });
      };
    }, tcpOnly);
    await p.goto(`${base}/stream.html?src=demo&mode=webrtc`);
    await p.waitForFunction(() => document.querySelector("video").currentTime > 0, null, { timeout: 20000 });
    const w0 = await p.evaluate(() => document.querySelector("video").currentTime);
    const ws = Date.now();
    await p.waitForFunction((t) => document.querySelector("video").currentTime >= t + 3, w0, { timeout: 10000 });
    const r = { advanced_in_ms: Date.now() - ws, colours: await colours(p) };
    Object.assign(r, await p.evaluate(async () => {
      const pc = window.__pcs[window.__pcs.length - 1];
      const all = new Map();
      (await pc.getStats()).forEach((s) => all.set(s.id, s));
      const out = { mode: document.querySelector("#mode").textContent };
      for (const s of all.values()) {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          out.frames_decoded = s.framesDecoded;
          out.codec = (all.get(s.codecId) || {}).mimeType;
        }
        if (s.type === "transport" && s.selectedCandidatePairId) {
          const pair = all.get(s.selectedCandidatePairId);
          out.protocol = (all.get(pair.remoteCandidateId) || {}).protocol;
        }
      }
      return out;
    }));
    result[label] = r;
    await ctx.close();
  }

  // A stream that fails: the player says why, with the source's error.
  const failing = await browser.newPage();
  await failing.goto(`${base}/stream.html?src=broken`);
  await failing.waitForFunction(
    () => !document.querySelector("#message").hidden && /nothing-here/.test(document.querySelector("#message").textContent),
    null,
    { timeout: 20000 },
  );
  result.player_error = await failing.textContent("#message");
  await failing.close();

  // 3. The list while the player keeps demo running, for the README.
  await page.reload();
  await page.waitForSelector('section.stream[data-name="demo"] .state.running', { timeout: 10000 });
  await page.waitForSelector('section.stream[data-name="demo"] img.thumb', { timeout: 10000 });
  await page.waitForTimeout(2500);
  result.codecs_shown = await page.textContent('section.stream[data-name="demo"] .producer .muted');
  // The README's picture: the top of the list.
  fs.writeFileSync(`${outDir}/list.png`, await page.screenshot());
  await player.close();

  // 4. Add a stream through the form; it shows up; delete it.
  await page.click("#add summary");
  await page.fill('#add-form input[name="name"]', "added_cam");
  await page.fill('#add-form textarea[name="src"]', "rtsp://10.0.0.9/stream1");
  await page.click('#add-form button[type="submit"]');
  await page.waitForSelector('section.stream[data-name="added_cam"]', { timeout: 10000 });
  const listed = await page.evaluate(async () => (await (await fetch("api/streams")).json()).added_cam);
  check(listed && listed.producers[0].url === "rtsp://10.0.0.9/stream1", "the added stream is in /api/streams");
  result.added = true;
  page.once("dialog", (d) => d.accept());
  await page.click('button[data-delete="added_cam"]');
  await page.waitForSelector('section.stream[data-name="added_cam"]', { state: "detached", timeout: 10000 });
  result.deleted = true;

  // 5. A narrow (phone) window: nothing wider than the screen.
  await page.setViewportSize({ width: 380, height: 800 });
  result.overflow_px = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(result.overflow_px <= 0, `the list overflows a phone screen by ${result.overflow_px}px`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
