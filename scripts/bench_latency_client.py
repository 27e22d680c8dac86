#!/usr/bin/env python3
"""Relay-added latency, measured from outside, for scripts/bench-latency
(stdlib only).

Subcommands:
  publish --url rtsp://HOST:PORT/NAME --media FILE --log FILE
                        publish the file's H.264 video over RTSP (ANNOUNCE,
                        SETUP with TCP interleaving, RECORD) at 25 frames a
                        second, looped, and log one line per frame once its
                        last byte is written: "INDEX HASH MONOTONIC_NS".
                        Prints READY once RECORD is answered; ends on
                        SIGTERM, or when the server closes the connection.
  probe --proto flv|rtsp -n K --writes FILE --seconds S [--stagger]
                        K viewers (HTTP-FLV /api/stream.flv?src=NAME, or RTSP
                        over TCP) that take the time each frame's last byte
                        arrives, match it to the producer's log by the hash
                        of its slice NAL, and print one RESULT line: the
                        added latency (read time - write time) p50/p99/max
                        over the frames written in the S-second window, and
                        every frame a viewer missed or got out of order.
  inside --port P --protocol http-flv|rtsp (--save FILE | --since FILE)
                        streamvisor's own delivery-delay histogram
                        (/api/metrics) over the same window: the bucket
                        bounds holding p50 and p99, for every viewer.

Both sides read CLOCK_MONOTONIC (time.monotonic_ns) on the same machine,
so the difference is what the relay (and the loopback) added. The id of a
frame is the hash of its slice NAL (the bench file has one slice per
frame): every server relays the coded slice byte for byte, whatever it
does to the NALs around it (SEI, AUD, parameter sets). The file loops every
750 frames, so a hash is matched to the first write after the viewer's
previous frame: in order, or reported.

Why the producer publishes over RTSP: it is the one ingest all three
servers take natively, with the same single hop (producer socket → server
→ viewer socket). An exec: FLV pipe would put a child process and a pipe
in streamvisor's and go2rtc's path but not in MediaMTX's; ffmpeg as the
publisher would put its muxer buffering inside the measured time.
"""

import argparse
import base64
import bisect
import hashlib
import json
import math
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_fanout_client import (  # noqa: E402  (one copy of the RTSP/HTTP client code)
    MAX_HEAD,
    Dechunker,
    RtspDialog,
    RtspError,
    flv_request,
    parse_rtsp_response,
    rtsp_url,
)

FPS = 25
RTP_CLOCK = 90000
# RTP payload per packet: what ffmpeg and cameras use on a 1500-byte MTU.
MAX_PAYLOAD = 1400
# No frame of a 2 Mbit/s 720p stream comes near this; a bigger "frame" is a
# parse error, not media.
MAX_FRAME = 4 * 1024 * 1024


def out(line):
    print(line, flush=True)


def log(msg):
    print(f"latency client: {msg}", file=sys.stderr, flush=True)


def frame_id(nal):
    return hashlib.blake2b(nal, digest_size=8).hexdigest()


def is_slice(nal_type):
    return nal_type in (1, 5)


# ---- the producer --------------------------------------------------------------


def annexb_nals(data):
    """The NAL units of an Annex B byte stream (H.264 §B.1), without start
    codes or the zero bytes that pad them."""
    nals = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = len(data) if j < 0 else j
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        i = j
    return nals


def access_units(nals):
    """NALs grouped into frames (H.264 §7.4.1.2.3): a frame ends before a
    parameter set, SEI or AUD that follows a slice, or before a slice whose
    first_mb_in_slice is 0 (its ue(v) is the single bit 1)."""
    aus, cur, seen_slice = [], [], False
    for nal in nals:
        t = nal[0] & 0x1F
        starts = seen_slice and (t in (6, 7, 8, 9) or (is_slice(t) and len(nal) > 1 and nal[1] & 0x80))
        if starts:
            aus.append(cur)
            cur, seen_slice = [], False
        cur.append(nal)
        seen_slice = seen_slice or is_slice(t)
    if cur and seen_slice:
        aus.append(cur)
    return aus


def load_frames(media):
    data = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", media,
         "-an", "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264", "pipe:1"],
        check=True, stdout=subprocess.PIPE,
    ).stdout
    aus = access_units(annexb_nals(data))
    if not aus:
        sys.exit(f"latency client: no H.264 frames in {media}")
    sps = next((n for au in aus for n in au if n[0] & 0x1F == 7), None)
    pps = next((n for au in aus for n in au if n[0] & 0x1F == 8), None)
    if sps is None or pps is None:
        sys.exit(f"latency client: no SPS/PPS in {media}")
    ids = []
    for au in aus:
        slices = [n for n in au if is_slice(n[0] & 0x1F)]
        if len(slices) != 1:
            sys.exit(f"latency client: a frame of {media} has {len(slices)} slices; the id needs one")
        ids.append(frame_id(slices[0]))
    if len(set(ids)) != len(ids):
        sys.exit(f"latency client: two frames of {media} have the same slice")
    return aus, ids, sps, pps


def rtp_packets(au, seq, ts, ssrc):
    """One frame as RTP over RTSP interleaved channel 0 (RFC 2326 §10.12):
    single NAL unit packets, FU-A (RFC 6184 §5.8) for NALs over
    MAX_PAYLOAD. The marker bit is on the frame's last packet (§5.1)."""
    payloads = []
    for nal in au:
        if len(nal) <= MAX_PAYLOAD:
            payloads.append(nal)
            continue
        indicator = (nal[0] & 0xE0) | 28
        ntype = nal[0] & 0x1F
        body = nal[1:]
        for off in range(0, len(body), MAX_PAYLOAD - 2):
            chunk = body[off : off + MAX_PAYLOAD - 2]
            header = ntype
            if off == 0:
                header |= 0x80
            if off + MAX_PAYLOAD - 2 >= len(body):
                header |= 0x40
            payloads.append(bytes((indicator, header)) + chunk)
    out_ = bytearray()
    last = 0
    for i, p in enumerate(payloads):
        last = len(out_)
        marker = 0x80 if i == len(payloads) - 1 else 0
        rtp = (
            bytes((0x80, marker | 96))
            + ((seq + i) & 0xFFFF).to_bytes(2, "big")
            + (ts & 0xFFFFFFFF).to_bytes(4, "big")
            + ssrc.to_bytes(4, "big")
        )
        out_ += b"$\x00" + (len(rtp) + len(p)).to_bytes(2, "big") + rtp + p
    return bytes(out_[:last]), bytes(out_[last:]), len(payloads)


def rtsp_request(sock, buf, url, cseq, method, extra=(), body=b""):
    lines = [f"{method} {url} RTSP/1.0", f"CSeq: {cseq}", "User-Agent: streamvisor-bench-latency"]
    lines.extend(extra)
    if body:
        lines.append(f"Content-Length: {len(body)}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    while True:
        r = parse_rtsp_response(buf)
        if r is not None:
            n, status, headers, _ = r
            del buf[:n]
            if status != 200:
                raise RtspError(f"{method}: RTSP {status}")
            return headers
        data = sock.recv(65536)
        if not data:
            raise RtspError(f"{method}: server closed the connection")
        buf += data


def cmd_publish(args):
    aus, ids, sps, pps = load_frames(args.media)
    u = urlsplit(args.url)
    sock = socket.create_connection((u.hostname, u.port or 554), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    sprop = ",".join(base64.b64encode(x).decode() for x in (sps, pps))
    sdp = (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=streamvisor bench-latency\r\n"
        "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
        "a=rtpmap:96 H264/90000\r\n"
        f"a=fmtp:96 packetization-mode=1;profile-level-id={sps[1:4].hex()};sprop-parameter-sets={sprop}\r\n"
        "a=control:trackID=0\r\n"
    ).encode()
    rtsp_request(sock, buf, args.url, 1, "ANNOUNCE", ["Content-Type: application/sdp"], sdp)
    h = rtsp_request(
        sock, buf, args.url.rstrip("/") + "/trackID=0", 2, "SETUP",
        ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"],
    )
    session = h.get("session", "").split(";")[0].strip()
    rtsp_request(sock, buf, args.url, 3, "RECORD", [f"Session: {session}", "Range: npt=0.000-"])
    sock.settimeout(None)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def drain():
        # RTCP receiver reports and keep-alive answers: read and dropped, so
        # the server never blocks on us; EOF ends the run.
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
        stop.set()

    threading.Thread(target=drain, daemon=True).start()
    logf = open(args.log, "w", buffering=1)
    out("READY")
    ssrc = 0x5EB0_0001
    seq, late_ns, lates = 0, 0, []
    t0 = time.monotonic_ns()
    period = 1_000_000_000 // FPS
    i = 0
    while not stop.is_set():
        due = t0 + i * period
        now = time.monotonic_ns()
        if due > now:
            time.sleep((due - now) / 1e9)
        au = aus[i % len(aus)]
        head, tail, n = rtp_packets(au, seq, i * (RTP_CLOCK // FPS), ssrc)
        seq += n
        try:
            if head:
                sock.sendall(head)
            # The write time is taken as the frame's last packet is handed
            # to the kernel: on loopback, send() itself runs the receiving
            # side, and a server on the other core can relay the packet
            # before send() returns (go2rtc did: "negative" latencies).
            t = time.monotonic_ns()
            sock.sendall(tail)
        except OSError as e:
            log(f"publish: {e}")
            break
        lates.append(t - due)
        late_ns = max(late_ns, t - due)
        # The fourth field: 1 for a keyframe (IDR), whose bytes are many
        # times a P frame's and so take the fan-out longest.
        key = int(any(n[0] & 0x1F == 5 for n in au))
        logf.write(f"{i} {ids[i % len(aus)]} {t} {key}\n")
        i += 1
    logf.close()
    lates.sort()
    if lates:
        log(
            f"producer wrote {i} frames; written after their due time by p50"
            f" {lates[len(lates) // 2] / 1e6:.2f} ms, max {late_ns / 1e6:.2f} ms"
        )
    sock.close()
    return 0


# ---- the viewers -------------------------------------------------------------------


class ProtoError(Exception):
    pass


class FlvViewer:
    """HTTP-FLV: the response header, chunked coding if any, then FLV tags.
    A video tag's frame is complete when its last byte is in."""

    def __init__(self, args):
        self.request = flv_request(args)
        self.head = bytearray()
        self.dechunk = None
        self.buf = bytearray()
        self.header_done = False
        self.flv_skip = None

    def start(self):
        return self.request

    def feed(self, data, t, frames):
        if self.dechunk is None and not self.header_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    raise ProtoError("response header too large")
                return
            head = bytes(self.head[:end]).decode("latin-1").lower()
            status = head.split("\r\n", 1)[0]
            if " 200" not in status:
                raise ProtoError(f"HTTP {status!r}")
            data = bytes(self.head[end + 4 :])
            self.head = None
            self.header_done = True
            if "transfer-encoding: chunked" in head:
                self.dechunk = Dechunker()
        if self.dechunk is not None:
            data = self.dechunk.feed(data)
        self.buf += data
        self.tags(t, frames)

    def tags(self, t, frames):
        b = self.buf
        if self.flv_skip is None:
            if len(b) < 9:
                return
            if b[:3] != b"FLV":
                raise ProtoError(f"not FLV: {bytes(b[:9])!r}")
            self.flv_skip = int.from_bytes(b[5:9], "big") + 4
        pos = 0
        while True:
            if self.flv_skip:
                n = min(self.flv_skip, len(b) - pos)
                pos += n
                self.flv_skip -= n
                if self.flv_skip:
                    break
            if len(b) - pos < 11:
                break
            size = int.from_bytes(b[pos + 1 : pos + 4], "big")
            if size > MAX_FRAME:
                raise ProtoError(f"FLV tag of {size} bytes")
            if len(b) - pos < 11 + size + 4:
                break
            if b[pos] & 0x1F == 9 and size > 5 and b[pos + 11] & 0x0F == 7 and b[pos + 12] == 1:
                # AVC NALU packet (FLV spec E.4.3.1): 4-byte NAL lengths.
                p, end = pos + 16, pos + 11 + size
                while p + 4 <= end:
                    n = int.from_bytes(b[p : p + 4], "big")
                    nal = b[p + 4 : p + 4 + n]
                    if nal and is_slice(nal[0] & 0x1F):
                        frames.append((frame_id(nal), t))
                        break
                    p += 4 + n
            pos += 11 + size + 4
        del b[:pos]


class RtspViewer:
    """RTSP over TCP: the dialog, then interleaved RTP on the video channel,
    depacketized (RFC 6184: single NAL, STAP-A, FU-A) until the slice NAL
    is whole."""

    def __init__(self, args):
        self.dialog = RtspDialog(rtsp_url(args), kinds=("video",))
        self.head = bytearray()
        self.playing = False
        self.buf = bytearray()
        self.fu = None
        self.channel = None
        self.keepalive_at = None

    def start(self):
        return self.dialog.start()

    def feed(self, data, t, frames):
        if not self.playing:
            self.head += data
            while not self.playing:
                r = parse_rtsp_response(self.head)
                if r is None:
                    return None
                n, status, headers, body = r
                del self.head[:n]
                nxt = self.dialog.on_response(status, headers, body)
                if nxt is not None:
                    return nxt
                self.playing = True
                self.channel = self.dialog.video_channel
                self.interval = min(max(self.dialog.session_timeout / 2, 5.0), 30.0)
                self.keepalive_at = time.monotonic() + self.interval
            data = bytes(self.head)
            self.head = None
        self.buf += data
        b = self.buf
        pos = 0
        while len(b) - pos >= 4:
            if b[pos] != 0x24:
                # An RTSP response (the keep-alive's) between packets.
                r = parse_rtsp_response(b[pos:])
                if r is None:
                    break
                pos += r[0]
                continue
            ch = b[pos + 1]
            n = int.from_bytes(b[pos + 2 : pos + 4], "big")
            if len(b) - pos < 4 + n:
                break
            if ch == self.channel and n > 12:
                self.rtp(b[pos + 4 : pos + 4 + n], t, frames)
            pos += 4 + n
        del b[:pos]
        if self.keepalive_at and time.monotonic() > self.keepalive_at:
            # go2rtc drops an RTSP viewer that sends nothing for 60 s.
            self.keepalive_at = time.monotonic() + self.interval
            return self.dialog.keepalive()
        return None

    def rtp(self, pkt, t, frames):
        cc = pkt[0] & 0x0F
        off = 12 + 4 * cc
        if pkt[0] & 0x10:  # header extension (RFC 3550 §5.3.1)
            off += 4 + 4 * int.from_bytes(pkt[off + 2 : off + 4], "big")
        end = len(pkt)
        if pkt[0] & 0x20:  # padding
            end -= pkt[-1]
        p = pkt[off:end]
        if not p:
            return
        typ = p[0] & 0x1F
        if typ == 28:  # FU-A
            if len(p) < 2:
                return
            if p[1] & 0x80:
                self.fu = bytearray(((p[0] & 0xE0) | (p[1] & 0x1F),))
            if self.fu is None:
                return
            self.fu += p[2:]
            if len(self.fu) > MAX_FRAME:
                raise ProtoError("FU-A NAL too large")
            if p[1] & 0x40:
                nal, self.fu = bytes(self.fu), None
                if is_slice(nal[0] & 0x1F):
                    frames.append((frame_id(nal), t))
        elif typ == 24:  # STAP-A
            q = 1
            while q + 2 <= len(p):
                n = int.from_bytes(p[q : q + 2], "big")
                nal = p[q + 2 : q + 2 + n]
                if nal and is_slice(nal[0] & 0x1F):
                    frames.append((frame_id(bytes(nal)), t))
                q += 2 + n
        elif is_slice(typ):
            frames.append((frame_id(bytes(p)), t))


def percentile(xs, q):
    """Nearest-rank percentile of sorted xs."""
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, math.ceil(q / 100 * len(xs)) - 1))
    return xs[k]


def read_writes(path):
    writes = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4:
                writes.append((int(parts[0]), parts[1], int(parts[2]), parts[3] == "1"))
    return writes


def match(frames, writes):
    """Each (id, read time) to the first write of that id after the
    previous match: [(write index, read time)], and the reads that match
    nothing after it (a frame out of order, repeated, or unknown), as
    (read time, the id's write before the previous match, the previous
    match). A write after the read cannot be its match: the file loops
    every 30 s, so a frame repeated or sent out of order would otherwise
    pass for the next loop's copy."""
    where = {}
    for k, (_, fid, _, _) in enumerate(writes):
        where.setdefault(fid, []).append(k)
    matched, stray, last = [], [], -1
    for fid, t in frames:
        ks = where.get(fid)
        j = bisect.bisect_right(ks, last) if ks else 0
        if not ks or j == len(ks) or writes[ks[j]][2] > t:
            # The latest write of that id before the last match, if any.
            stray.append((t, writes[ks[j - 1]][0] if ks and j else None, writes[last][0] if last >= 0 else None))
            continue
        last = ks[j]
        matched.append((last, t))
    return matched, stray


def cmd_probe(args):
    sel = selectors.DefaultSelector()
    viewers = []
    port = args.rtsp_port if args.proto == "rtsp" else args.port

    def open_viewer():
        v = RtspViewer(args) if args.proto == "rtsp" else FlvViewer(args)
        v.k, v.frames, v.error = len(viewers), [], None
        viewers.append(v)
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(v.start())
            s.setblocking(False)
        except OSError as e:
            v.error = f"connect: {e}"
            return 0
        v.sock = s
        sel.register(s, selectors.EVENT_READ, v)
        return 1

    open_n = 0
    if args.stagger:
        # One viewer per "open" line on stdin, each announced (OPENED k)
        # once it has a frame: the bench opens load readers in between, so
        # the probes sit at the start, middle and end of the servers'
        # viewer lists, not all at one end of the fan-out order.
        sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    else:
        for _ in range(args.n):
            open_n += open_viewer()

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    cpu0 = time.process_time()
    win0 = win1 = None
    deadline = time.monotonic_ns() + int(args.ready_timeout * 1e9)
    while not stop and (open_n or len(viewers) < args.n):
        now = time.monotonic_ns()
        if win0 is None:
            if len(viewers) == args.n and all(v.frames for v in viewers if v.error is None):
                # Every viewer has had a frame: the window starts after the
                # warm-up, which also lets the GOP a server hands a new
                # viewer at once (written seconds ago) go by.
                win0 = now + int(args.warmup * 1e9)
                win1 = win0 + int(args.seconds * 1e9)
                cpu_w0, wall_w0 = time.process_time(), now
                out(f"WINDOW start_in={args.warmup}")
            elif now > deadline:
                break
        elif now > win1 + int(args.grace * 1e9):
            break
        for key, _ in sel.select(0.2):
            v = key.data
            if v is None:
                ctl = os.read(key.fd, 4096)
                if not ctl:
                    sel.unregister(key.fd)
                for _ in range(ctl.count(b"open")):
                    if len(viewers) < args.n:
                        open_n += open_viewer()
                        deadline = time.monotonic_ns() + int(args.ready_timeout * 1e9)
                continue
            try:
                data = v.sock.recv(262144)
                t = time.monotonic_ns()
                if not data:
                    raise ProtoError("server closed the connection")
                had = len(v.frames)
                reply = v.feed(data, t, v.frames)
                if reply:
                    v.sock.sendall(reply)
                if args.stagger and not had and v.frames:
                    out(f"OPENED {v.k}")
            except (OSError, ProtoError, RtspError) as e:
                v.error = str(e) if not isinstance(e, OSError) else f"socket: {e}"
                sel.unregister(v.sock)
                v.sock.close()
                open_n -= 1
    cpu1, wall1 = time.process_time(), time.monotonic_ns()
    for v in viewers:
        if v.error is None:
            v.sock.close()
    if len(viewers) < args.n:
        out(f"RESULT error=not-opened viewers={args.n}")
        log(f"only {len(viewers)} of {args.n} viewers were opened")
        return 1
    if win0 is None:
        errs = "; ".join(f"viewer {v.k}: {v.error}" for v in viewers if v.error) or "no frame"
        out(f"RESULT error=no-window viewers={args.n}")
        log(f"not every viewer got a frame within {args.ready_timeout} s: {errs}")
        return 1
    if win1 > time.monotonic_ns():
        log("the window was cut short")

    writes = read_writes(args.writes)
    in_window = [k for k, (_, _, tw, _) in enumerate(writes) if win0 <= tw <= win1]
    if not in_window:
        out(f"RESULT error=no-writes viewers={args.n}")
        log("the producer wrote nothing during the window")
        return 1
    lo, hi = in_window[0], in_window[-1]
    lat, missing_total, stray_total, bad = [], 0, 0, 0
    lat_key, lat_other = [], []
    for v in viewers:
        matched, strays = match(v.frames, writes)
        # Reads outside the window are not judged: before it, the start a
        # server gives a new viewer; after it, frames the producer may not
        # have logged yet when we read its log. In the window every frame
        # must come, in order.
        stray = [x for x in strays if win0 <= x[0] <= win1]
        got = {}
        for k, t in matched:
            if lo <= k <= hi:
                got[k] = t
        missing = [writes[k][0] for k in range(lo, hi + 1) if k not in got]
        mine = sorted((t - writes[k][2]) / 1e6 for k, t in got.items())
        lat.extend(mine)
        for k, t in got.items():
            (lat_key if writes[k][3] else lat_other).append((t - writes[k][2]) / 1e6)
        missing_total += len(missing)
        stray_total += len(stray)
        if v.error or missing or stray:
            bad += 1
        if mine:
            log(
                f"viewer {v.k}: {len(got)}/{hi - lo + 1} frames, added p50 {percentile(mine, 50):.2f}"
                f" p99 {percentile(mine, 99):.2f} max {mine[-1]:.2f} ms"
                + (f"; missing {len(missing)}: {missing[:10]}" if missing else "")
                + (
                    f"; {len(stray)} out of order or unknown, e.g. frame {stray[0][1]} after {stray[0][2]}"
                    if stray
                    else ""
                )
                + (
                    f"; {len(strays) - len(stray)} out of order outside the window, e.g. frame"
                    f" {next(x for x in strays if x not in stray)[1]} after {next(x for x in strays if x not in stray)[2]}"
                    if len(strays) > len(stray)
                    else ""
                )
                + (f"; {v.error}" if v.error else "")
            )
        else:
            log(f"viewer {v.k}: no frame of the window" + (f" ({v.error})" if v.error else ""))
    lat.sort()
    cpu_pct = (cpu1 - cpu_w0) / max((wall1 - wall_w0) / 1e9, 1e-3) * 100
    lat_key.sort()
    lat_other.sort()
    # Where the tail comes from: a keyframe is several times a P frame's
    # bytes, so it takes a fan-out to many viewers the longest.
    if lat_key and lat_other:
        log(
            f"keyframes ({len(lat_key)} deliveries): added p50 {percentile(lat_key, 50):.2f}"
            f" max {lat_key[-1]:.2f} ms; other frames: p50 {percentile(lat_other, 50):.2f}"
            f" p99 {percentile(lat_other, 99):.2f} max {lat_other[-1]:.2f} ms"
        )
    out(
        "RESULT"
        f" viewers={args.n} frames={hi - lo + 1} samples={len(lat)}"
        f" p50={percentile(lat, 50):.2f} p99={percentile(lat, 99):.2f}"
        f" max={(lat[-1] if lat else float('nan')):.2f}"
        f" missing={missing_total} stray={stray_total} bad_viewers={bad}"
        f" probe_cpu={cpu_pct:.1f} cpu_total={cpu1 - cpu0:.2f}"
    )
    return 0


def delay_buckets(port, stream, protocol):
    """streamvisor's own delivery-delay histogram for the stream's outputs
    of one protocol (/api/metrics, Prometheus text): {le: cumulative count}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/metrics", timeout=5) as resp:
        text = resp.read(8 << 20).decode()
    pat = re.compile(r'^streamvisor_stream_delivery_delay_seconds_bucket\{([^}]*)\} (\S+)$')
    want = {"stream": stream, "protocol": protocol}
    buckets = {}
    for line in text.splitlines():
        m = pat.match(line)
        if not m:
            continue
        labels = dict(kv.split("=", 1) for kv in re.findall(r'\w+="[^"]*"', m.group(1)))
        labels = {k: v.strip('"') for k, v in labels.items()}
        if all(labels.get(k) == v for k, v in want.items()):
            le = labels["le"]
            buckets[le] = buckets.get(le, 0) + float(m.group(2))
    return buckets


def cmd_inside(args):
    """The server's own view of the same window: the difference of two
    scrapes of its delivery-delay histogram, as the bucket bounds that
    hold p50 and p99 (every viewer, not only the probes)."""
    now = delay_buckets(args.port, args.stream, args.protocol)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(now, f)
        return 0
    with open(args.since) as f:
        before = json.load(f)
    les = sorted(now, key=lambda le: float("inf") if le == "+Inf" else float(le))
    # Prometheus buckets are cumulative (count <= le); +Inf is the total.
    diffs = [now[le] - before.get(le, 0) for le in les]
    total = diffs[-1] if diffs else 0
    if not total:
        out("INSIDE count=0")
        return 0

    def bound(q):
        for le, d in zip(les, diffs):
            if d >= q / 100 * total:
                return "inf" if le == "+Inf" else f"{float(le) * 1000:g}"
        return "inf"

    out(f"INSIDE count={int(total)} p50_le={bound(50)} p99_le={bound(99)}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pub = sub.add_parser("publish")
    pub.add_argument("--url", required=True)
    pub.add_argument("--media", required=True)
    pub.add_argument("--log", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("--proto", choices=["flv", "rtsp"], default="flv")
    pr.add_argument("--port", type=int, default=0, help="HTTP port (HTTP-FLV)")
    pr.add_argument("--rtsp-port", type=int, default=0)
    pr.add_argument("--stream", default="bench")
    pr.add_argument("-n", type=int, default=1)
    pr.add_argument("--writes", required=True, help="the producer's log")
    pr.add_argument("--seconds", type=float, default=10.0)
    pr.add_argument("--warmup", type=float, default=3.0)
    pr.add_argument("--grace", type=float, default=1.0, help="reading on after the window")
    pr.add_argument("--ready-timeout", type=float, default=20.0)
    pr.add_argument("--stagger", action="store_true", help='open a viewer per "open" line on stdin')
    ins = sub.add_parser("inside")
    ins.add_argument("--port", type=int, required=True, help="streamvisor's API port")
    ins.add_argument("--stream", default="bench")
    ins.add_argument("--protocol", required=True, help="http-flv or rtsp")
    g = ins.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", help="write the histogram now to this file")
    g.add_argument("--since", help="print the quantiles since this saved histogram")
    args = p.parse_args()
    if args.cmd == "inside":
        return cmd_inside(args)
    if args.cmd == "publish":
        return cmd_publish(args)
    return cmd_probe(args)


if __name__ == "__main__":
    sys.exit(main())
