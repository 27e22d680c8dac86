"""A WebRTC viewer (aiortc) of one of our streams, over loopback.

Usage: webrtc_client.py URL SECONDS [PLI_AFTER] [--drop FRACTION] [--pli-every FRAMES]
URL is our POST /api/webrtc?src=NAME, or ws://…/api/ws?src=NAME. Offers recvonly video and audio,
receives for SECONDS, prints one JSON line: frames decoded, their size,
keyframes, and seconds of audio. With PLI_AFTER, sends an RTCP PLI
(RFC 4585 §6.3.1) after that many video frames and reports what came next.
With --drop, that fraction of the video RTP packets (retransmissions
included) is thrown away on arrival, as a lossy network or a full socket
buffer would, and the client counts its NACKs and PLIs and the frame rate
it decoded. With --pli-every, a PLI goes out every that many video
frames, as a browser asks when a loss got past its NACKs.
"""

import asyncio
import json
import random
import sys
import time

import aioice.ice
import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

# aioice leaves loopback out of its host candidates; the tests talk over
# loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def lose_packets(fraction: float, got: dict) -> None:
    """Drops `fraction` of the video RTP packets after SRTP, before aiortc's
    NACK generator and jitter buffer see them: to aiortc they never came."""
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    rng = random.Random(17)  # the same losses every run
    handle, nack, pli = (
        RTCRtpReceiver._handle_rtp_packet,
        RTCRtpReceiver._send_rtcp_nack,
        RTCRtpReceiver._send_rtcp_pli,
    )

    async def handle_lossy(self, packet, arrival_time_ms):
        if self._RTCRtpReceiver__kind == "video" and rng.random() < fraction:
            got["dropped"] += 1
            return
        await handle(self, packet, arrival_time_ms)

    async def count_nack(self, media_ssrc, lost):
        got["nacks"] += 1
        await nack(self, media_ssrc, lost)

    async def count_pli(self, media_ssrc):
        got["plis"] += 1
        await pli(self, media_ssrc)

    got.update(dropped=0, nacks=0, plis=0)
    RTCRtpReceiver._handle_rtp_packet = handle_lossy
    RTCRtpReceiver._send_rtcp_nack = count_nack
    RTCRtpReceiver._send_rtcp_pli = count_pli


async def main(url: str, seconds: float, pli_after: int, drop: float, pli_every: int) -> None:
    pc = RTCPeerConnection()
    video = pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    got = {"video_frames": 0, "width": 0, "height": 0, "audio_seconds": 0.0, "keyframes": 0}
    tasks = []
    if drop > 0:
        lose_packets(drop, got)
    first_frame = None

    async def consume(track):
        nonlocal first_frame
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    if first_frame is None:
                        first_frame = time.monotonic()
                    got["video_frames"] += 1
                    got["width"], got["height"] = frame.width, frame.height
                    if frame.key_frame:
                        got["keyframes"] += 1
                    # After a PLI: K or d for each frame, and whether its
                    # time went forward.
                    if "after_pli" in got and len(got["after_pli"]) < 20:
                        got["after_pli"] += "K" if frame.key_frame else "d"
                        got["pts_forward"] &= frame.pts > got["last_pts"]
                    got["last_pts"] = frame.pts
                    if pli_every > 0 and got["video_frames"] % pli_every == 0:
                        ssrc = video.receiver.getSynchronizationSources()[0].source
                        await video.receiver._send_rtcp_pli(ssrc)
                    if got["video_frames"] == pli_after:
                        ssrc = video.receiver.getSynchronizationSources()[0].source
                        got["after_pli"] = ""
                        got["pts_forward"] = True
                        await video.receiver._send_rtcp_pli(ssrc)
                else:
                    got["audio_seconds"] += frame.samples / frame.sample_rate
        except MediaStreamError:
            pass

    @pc.on("track")
    def on_track(track):
        tasks.append(asyncio.ensure_future(consume(track)))

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as s:
        if url.startswith("ws"):
            # go2rtc's /api/ws, as Home Assistant speaks it: the offer, then
            # our candidates trickled; the answer must come first.
            ws = await s.ws_connect(url)
            await ws.send_json({"type": "webrtc", "value": {"type": "offer", "sdp": pc.localDescription.sdp}})
            for line in pc.localDescription.sdp.splitlines():
                if line.startswith("a=candidate:"):
                    await ws.send_json({"type": "webrtc/candidate", "value": line[2:]})
            msg = await ws.receive_json(timeout=20)
            got["first_message"] = msg["type"]
            if msg["type"] != "webrtc" or msg["value"]["type"] != "answer":
                raise SystemExit(f"expected the answer first, got {msg}")
            sdp = msg["value"]["sdp"]
        else:
            ws = None
            async with s.post(url, json={"type": "offer", "sdp": pc.localDescription.sdp}) as r:
                body = await r.json()
                if r.status != 200:
                    raise SystemExit(f"offer refused: {r.status} {body}")
            sdp = body["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await asyncio.sleep(seconds)
        if first_frame is not None:
            # Frames decoded per second from the first one to the end.
            got["fps"] = round(got["video_frames"] / (time.monotonic() - first_frame), 2)
        await pc.close()
        if ws is not None:
            await ws.close()
    for t in tasks:
        t.cancel()
    print(json.dumps(got))


if __name__ == "__main__":
    args, opts = sys.argv[1:], {"--drop": 0.0, "--pli-every": 0}
    for name, default in list(opts.items()):
        if name in args:
            at = args.index(name)
            opts[name] = type(default)(args[at + 1])
            del args[at : at + 2]
    pli_after = int(args[2]) if len(args) > 2 else -1
    asyncio.run(main(args[0], float(args[1]), pli_after, opts["--drop"], opts["--pli-every"]))
