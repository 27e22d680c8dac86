"""A WebRTC viewer (aiortc) of one of our streams, over loopback.

Usage: webrtc_client.py URL SECONDS [PLI_AFTER]
URL is our POST /api/webrtc?src=NAME, or ws://…/api/ws?src=NAME. Offers recvonly video and audio,
receives for SECONDS, prints one JSON line: frames decoded, their size,
keyframes, and seconds of audio. With PLI_AFTER, sends an RTCP PLI
(RFC 4585 §6.3.1) after that many video frames and reports what came next.
"""

import asyncio
import json
import sys

import aioice.ice
import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

# aioice leaves loopback out of its host candidates; the tests talk over
# loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


async def main(url: str, seconds: float, pli_after: int) -> None:
    pc = RTCPeerConnection()
    video = pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    got = {"video_frames": 0, "width": 0, "height": 0, "audio_seconds": 0.0, "keyframes": 0}
    tasks = []

    async def consume(track):
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
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
        await pc.close()
        if ws is not None:
            await ws.close()
    for t in tasks:
        t.cancel()
    print(json.dumps(got))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else -1))
