#!/usr/bin/python3
"""Stand-in IP camera for integration tests: a loopback RTSP server that is
*not* ours (GStreamer's gst-rtsp-server), serving live H.264 + AAC, or
what --video (h264, h265, mjpeg) and --audio (aac, pcma, pcmu, opus, none) say.

Usage: /usr/bin/python3 tests/support/rtsp_camera.py --port PORT [--path /cam]
       [--video h265] [--audio pcma]

Prints exactly one line "READY rtsp://127.0.0.1:PORT/cam" on stdout once the
socket is bound, then serves until SIGTERM/SIGINT. --port 0 picks a free port
(the READY line then carries the real one).

Needs Debian's python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-
{base,good,ugly,bad} and gstreamer1.0-libav.
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"


def die(msg):
    print(f"rtsp_camera: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def aac_encoder():
    # avenc_aac (gstreamer1.0-libav) is what Debian reliably ships; the others
    # are only fallbacks for stripped-down installs.
    for name in ("avenc_aac", "voaacenc", "faac"):
        if Gst.ElementFactory.find(name):
            return name
    die("no AAC encoder found (install gstreamer1.0-libav)")


def launch_line(video_codec="h264", audio_codec="aac"):
    # Both sources are live so the server paces output in real time, like a
    # camera. Short GOP + in-band parameter sets (config-interval=-1, on every
    # keyframe) let a client that joins a shared, already-running stream
    # start decoding within ~1 s without relying on the SDP sprop values.
    raw = (
        "videotestsrc is-live=true pattern=ball"
        " ! video/x-raw,width=320,height=240,framerate=25/1"
    )
    if video_codec == "h264":
        video = (
            f"{raw} ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25"
            " byte-stream=true"
            " ! video/x-h264,stream-format=byte-stream,profile=constrained-baseline"
            " ! rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    elif video_codec == "h265":
        # What Hikvision, Dahua and Reolink main streams send (RFC 7798).
        video = (
            f"{raw} ! x265enc tune=zerolatency speed-preset=ultrafast key-int-max=25"
            " ! video/x-h265,stream-format=byte-stream"
            " ! h265parse ! rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    elif video_codec == "mjpeg":
        # RFC 2435 JPEG over RTP (payload type 26), what older and cheap
        # cameras send. videotestsrc would negotiate Y444, and a 4:4:4 JPEG
        # has no RFC 2435 type (§4.1: 0 is 4:2:2, 1 is 4:2:0): rtpjpegpay
        # drops every frame ("Invalid component"), the shared media never
        # prerolls and DESCRIBE is never answered. I420 makes type 1.
        video = (
            f"{raw},format=I420 ! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26"
        )
    else:
        die(f"unknown --video {video_codec}")
    tone = "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample"
    if audio_codec == "aac":
        # rtpmp4gpay = RFC 3640 (mpeg4-generic, AAC-hbr), which is what real
        # cameras send and what ffmpeg's RTSP demuxer expects for AAC.
        audio = (
            f"{tone} ! audio/x-raw,rate=44100,channels=2"
            f" ! {aac_encoder()} bitrate=128000"
            " ! rtpmp4gpay name=pay1 pt=97"
        )
    elif audio_codec in ("pcma", "pcmu"):
        # G.711 at 8 kHz mono: most cameras' default audio (RFC 3551 PT 8/0).
        enc, pay, pt = (("alawenc", "rtppcmapay", 8) if audio_codec == "pcma"
                        else ("mulawenc", "rtppcmupay", 0))
        audio = (
            f"{tone} ! audio/x-raw,rate=8000,channels=1"
            f" ! {enc} ! {pay} name=pay1 pt={pt}"
        )
    elif audio_codec == "opus":
        audio = (
            f"{tone} ! audio/x-raw,rate=48000,channels=2"
            " ! opusenc ! rtpopuspay name=pay1 pt=97"
        )
    elif audio_codec == "none":
        return f"( {video} )"
    else:
        die(f"unknown --audio {audio_codec}")
    return f"( {video}  {audio} )"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--video", default="h264", choices=["h264", "h265", "mjpeg"])
    ap.add_argument("--audio", default="aac", choices=["aac", "pcma", "pcmu", "opus", "none"])
    args = ap.parse_args()
    path = args.path if args.path.startswith("/") else "/" + args.path

    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)  # loopback only: never expose a test camera
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.video, args.audio))
    # One pipeline for all clients, so several readers (relay + probes) can
    # attach at once and see the same stream, as with a real camera.
    factory.set_shared(True)
    # ffmpeg uses -rtsp_transport tcp (interleaved); keep UDP too for
    # ad-hoc debugging with other clients.
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
    server.get_mount_points().add_factory(path, factory)

    # attach() binds the listening socket synchronously; 0 means it failed
    # (typically EADDRINUSE), so there is no point entering the loop.
    if server.attach(None) == 0:
        die(f"cannot bind RTSP server to {HOST}:{args.port}")

    loop = GLib.MainLoop()

    def stop(*_):
        loop.quit()
        return GLib.SOURCE_REMOVE

    # GLib-level handlers: Python's own signal handlers would not run while
    # the main loop is blocked in C.
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, stop)

    # get_bound_port() reports the real port when --port 0 was asked for.
    print(f"READY rtsp://{HOST}:{server.get_bound_port()}{path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
