// Does Chromium play a stream's audio through the player's MSE path?
// Usage: node audio_test.mjs BASE_URL STREAM. Prints one JSON line of what
// it measured (tests/browser_audio.rs judges it); throws if it cannot.
import { chromium } from "playwright-core";

const [base, stream] = process.argv.slice(2);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  // The MIME type the player asks MSE for, as it asks.
  await page.addInitScript(() => {
    window.__types = [];
    const add = MediaSource.prototype.addSourceBuffer;
    MediaSource.prototype.addSourceBuffer = function (t) {
      window.__types.push(t);
      return add.call(this, t);
    };
  });
  await page.goto(`${base}/stream.html?src=${encodeURIComponent(stream)}`);
  await page.waitForFunction(() => document.querySelector("video").currentTime > 0, null, { timeout: 30000 });
  // Unmuted, through an analyser: the camera's 440 Hz tone must show up
  // as energy in the bins around it, not just as decoded bytes.
  await page.evaluate(() => {
    const v = document.querySelector("video");
    v.muted = false;
    const ctx = new AudioContext();
    const an = ctx.createAnalyser();
    an.fftSize = 2048;
    ctx.createMediaElementSource(v).connect(an);
    an.connect(ctx.destination);
    ctx.resume();
    window.__peak = 0;
    window.__loud = 0;
    const bins = new Uint8Array(an.frequencyBinCount);
    setInterval(() => {
      an.getByteFrequencyData(bins);
      // Bin width is sampleRate / fftSize; look around 440 Hz.
      const at = Math.round((440 * an.fftSize) / ctx.sampleRate);
      const peak = Math.max(...bins.subarray(at - 2, at + 3));
      window.__peak = Math.max(window.__peak, peak);
      if (peak > 100) window.__loud++;
    }, 100);
  });
  const t0 = await page.evaluate(() => document.querySelector("video").currentTime);
  await page.waitForTimeout(5000);
  const r = await page.evaluate((t0) => {
    const v = document.querySelector("video");
    return {
      mode: document.querySelector("#mode").textContent,
      codecs: window.__types.join(" | "),
      advanced_s: v.currentTime - t0,
      audio_bytes: v.webkitAudioDecodedByteCount,
      video_frames: v.webkitDecodedFrameCount,
      peak_440: window.__peak,
      loud_bins: window.__loud,
      message: document.querySelector("#message").textContent,
    };
  }, t0);
  console.log(JSON.stringify(r));
} finally {
  await browser.close();
}
