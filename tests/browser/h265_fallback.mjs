// An H.265 camera in Debian's Chromium, which has no HEVC decoder: the
// player must fall back to the stream's H.265→H.264 transcode, over MSE
// and over WebRTC. Usage: node h265_fallback.mjs BASE_URL STREAM
// Prints one JSON line of what it measured; any failed check throws.
import { chromium } from "playwright-core";

const [base, stream] = process.argv.slice(2);
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
try {
  // This browser really cannot decode H.265, or the test proves nothing.
  const probe = await browser.newPage();
  result.hevc_supported = await probe.evaluate(
    () => MediaSource.isTypeSupported('video/mp4; codecs="hvc1.1.6.L93.B0"'),
  );
  await probe.close();
  check(!result.hevc_supported, "this Chromium decodes HEVC: the fallback is not exercised");

  for (const mode of ["mse", "webrtc"]) {
    const page = await browser.newPage({ viewport: { width: 640, height: 480 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`${base}/stream.html?src=${encodeURIComponent(stream)}&mode=${mode}`);
    // Pictures decode: the frame count grows past 50 (2 s at 25 fps).
    await page.waitForFunction(
      () => {
        const v = document.querySelector("video");
        return v && v.getVideoPlaybackQuality().totalVideoFrames > 50;
      },
      null,
      { timeout: 45000 },
    ).catch(async (e) => {
      const msg = await page.textContent("#message").catch(() => "");
      throw new Error(`${mode}: no pictures (${msg}; ${errors.join("; ")}): ${e.message}`);
    });
    result[`${mode}_mode`] = (await page.textContent("#mode")).trim();
    result[`${mode}_frames`] = await page.evaluate(
      () => document.querySelector("video").getVideoPlaybackQuality().totalVideoFrames,
    );
    await page.close();
  }
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
