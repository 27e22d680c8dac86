"""Home Assistant's go2rtc calls, made by HA's own client library.

Usage: ha_client.py BASE_URL STREAM CAMERA_URL SNAPSHOT_PATH

Runs the sequence HA's go2rtc integration runs (version check, stream
list, register, list again, snapshot, schemes, preload) with the PyPI
library `go2rtc-client`, and prints one JSON line of what it saw. Any
failure is an exception: the exit code is non-zero.
"""

import asyncio
import json
import sys

import aiohttp
from go2rtc_client import Go2RtcRestClient


async def main(base: str, name: str, camera: str, snapshot: str) -> None:
    async with aiohttp.ClientSession() as session:
        client = Go2RtcRestClient(session, base)
        version = await client.validate_server_version()
        before = await client.streams.list()
        assert name not in before, f"{name} already there: {before}"
        # What HA registers (homeassistant/components/go2rtc).
        sources = [
            camera,
            f"ffmpeg:{name}#audio=opus#query=log_level=debug",
            f"ffmpeg:{name}#video=mjpeg",
        ]
        await client.streams.add(name, sources)
        streams = await client.streams.list()
        urls = [p.url for p in streams[name].producers]
        assert urls == sources, f"urls not echoed exactly: {urls}"
        jpeg = await client.get_jpeg_snapshot(name, 160, None)
        with open(snapshot, "wb") as f:
            f.write(jpeg)
        schemes = await client.schemes.list()
        assert {"rtsp", "rtsps", "rtmp", "http", "https", "ffmpeg", "exec"} <= schemes, schemes
        await client.preload.enable(name, video_codec_filter=["h264", "h265"])
        preloads = await client.preload.list()
        assert name in preloads, preloads
        await client.preload.disable(name)
        preloads = await client.preload.list()
        assert name not in preloads, preloads
        print(json.dumps({"version": str(version), "urls": urls, "jpeg_bytes": len(jpeg)}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
