#!/usr/bin/env python3
"""Load generator, probe and API helper for scripts/bench-* (stdlib only).

Subcommands:
  free-port             print a free loopback TCP port
  wait-ready [--http-port P] [--tcp-port R] [--pid PID]
                        wait until GET /api answers (when --http-port) and
                        R accepts a TCP connection; fail at once if PID dies
  streams   --port P    print the stream's producer pid and consumer stats
                        from streamvisor's /api/streams, as key=value lines
  readers   --port P -n N [--proto flv|rtsp --rtsp-port R]
                        open N HTTP-FLV (or RTSP/TCP) readers, print READY
                        once all of them receive data; SIGUSR1 opens the
                        measurement window, SIGUSR2 closes it and prints
                        RESULT; SIGTERM ends.
  cycle --server-pid PID --proto flv|rtsp -k K
                        K times: wait until the server has no child process
                        (the stream is idle), open one reader and time its
                        first media byte (cold start); read for --hold
                        seconds; close it and time until every process the
                        server had started is gone (teardown).
  table FILE            print the results a bench script collected (TSV)
                        as one table: streamvisor, each peer, the ratio to the best peer.

The readers run on the same (2-core) machine as the server they measure,
so every CPU cycle spent here is one the server may not get. Hence:
asyncio's BufferedProtocol (the loop calls recv_into straight into our
buffer, no coroutine or bytes object per read), one 256 KiB buffer shared
by all readers (they discard what they read), and one event loop.

The RTSP readers talk as ffmpeg does (DESCRIBE, then SETUP per track with
the Session the first SETUP gave, then PLAY, all over TCP, and an OPTIONS
keep-alive every half session timeout), so the same client works against
streamvisor, go2rtc and MediaMTX.
"""

import argparse
import asyncio
import json
import os
import random
import re
import resource
import signal
import socket
import statistics
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

READ_SIZE = 256 * 1024
# Shared by every reader: safe because the loop is single-threaded and a
# reader is done with the bytes before buffer_updated returns.
_BUF = bytearray(READ_SIZE)
_VIEW = memoryview(_BUF)
# A response header larger than this is not the server we are measuring.
MAX_HEAD = 16 * 1024


def out(line):
    # The bench script polls our stdout (a file): flush every line.
    print(line, flush=True)


def log(msg):
    print(f"bench client: {msg}", file=sys.stderr, flush=True)


class RtspError(Exception):
    pass


def parse_rtsp_response(buf):
    """One complete RTSP response at the start of buf, as (bytes it takes,
    status, headers with lower-case names, body), or None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise RtspError("response header too large")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("RTSP/"):
        raise RtspError(f"not an RTSP response: {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise RtspError(f"bad status line: {lines[0][:80]!r}") from None
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    try:
        n = int(headers.get("content-length") or 0)
    except ValueError:
        raise RtspError("bad Content-Length") from None
    total = end + 4 + n
    if len(buf) < total:
        return None
    return total, status, headers, bytes(buf[end + 4 : total])


def resolve_control(base, control):
    """ffmpeg's rule: an absolute control URL as is, a relative one appended
    to the base (Content-Base, or the URL asked for) after a '/'."""
    if control is None or control == "*":
        return base
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", control):
        return control
    return base + ("" if base.endswith("/") else "/") + control


def parse_sdp_tracks(sdp, base, kinds=("video", "audio")):
    """[kind, control URL] of the first media of each kind, in SDP order."""
    medias = []
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            medias.append([line[2:].split(" ", 1)[0], None])
        elif line.startswith("a=control:") and medias:
            medias[-1][1] = line[len("a=control:") :].strip()
    tracks, seen = [], set()
    for kind, control in medias:
        if kind in kinds and kind not in seen:
            seen.add(kind)
            tracks.append([kind, resolve_control(base, control)])
    return tracks


class RtspDialog:
    """The client side of DESCRIBE, SETUP (each track, TCP interleaved) and
    PLAY, one request at a time, as ffmpeg does it: any RTSP server that
    serves ffmpeg serves this."""

    def __init__(self, url, kinds=("video", "audio")):
        self.url = url
        self.kinds = kinds
        self.cseq = 0
        self.session = None
        self.session_timeout = 60.0
        self.control = url  # where PLAY (the aggregate control) goes
        self.tracks = []  # [kind, control URL, interleaved RTP channel]
        self.step = "DESCRIBE"
        self.setup_i = 0

    def request(self, method, url, extra=()):
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: streamvisor-bench"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines.extend(extra)
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def start(self):
        return self.request("DESCRIBE", self.url, ["Accept: application/sdp"])

    def keepalive(self):
        return self.request("OPTIONS", self.control)

    @property
    def video_channel(self):
        for kind, _, ch in self.tracks:
            if kind == "video":
                return ch
        return None

    def _setup(self):
        i = self.setup_i
        return self.request(
            "SETUP",
            self.tracks[i][1],
            [f"Transport: RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"],
        )

    def on_response(self, status, headers, body):
        """The next request, or None once PLAY is answered."""
        if status != 200:
            raise RtspError(f"{self.step}: RTSP {status}")
        if self.step == "DESCRIBE":
            base = headers.get("content-base") or headers.get("content-location") or self.url
            self.control = base
            self.tracks = [t + [None] for t in parse_sdp_tracks(body.decode("latin-1"), base, self.kinds)]
            if not self.tracks:
                raise RtspError("DESCRIBE: no video or audio track in the SDP")
            self.step = "SETUP"
            return self._setup()
        if self.step == "SETUP":
            sess = headers.get("session")
            if sess:
                sid, *params = [x.strip() for x in sess.split(";")]
                self.session = sid
                for prm in params:
                    if prm.lower().startswith("timeout="):
                        try:
                            self.session_timeout = float(prm[8:])
                        except ValueError:
                            pass
            m = re.search(r"interleaved=(\d+)", headers.get("transport", ""))
            self.tracks[self.setup_i][2] = int(m.group(1)) if m else 2 * self.setup_i
            self.setup_i += 1
            if self.setup_i < len(self.tracks):
                return self._setup()
            self.step = "PLAY"
            return self.request("PLAY", self.control, ["Range: npt=0.000-"])
        if self.step == "PLAY":
            self.step = "PLAYING"
            return None
        raise RtspError(f"unexpected response while {self.step}")


class Reader(asyncio.BufferedProtocol):
    """One viewer. HTTP-FLV: sends the GET, checks the status. RTSP: walks
    the RtspDialog to PLAY. Then counts and discards every byte (chunk
    framing, interleaved headers, RTCP included)."""

    def __init__(self, request=None, dialog=None):
        self.request = request
        self.dialog = dialog
        self.transport = None
        self.head = bytearray()
        self.status = None  # set once the response header (PLAY's) is complete
        self.body = 0  # bytes after the header
        self.open = False
        self.error = None
        self.keepalive_timer = None

    def connection_made(self, transport):
        self.transport = transport
        self.open = True
        transport.write(self.dialog.start() if self.dialog else self.request)

    def get_buffer(self, sizehint):
        return _VIEW

    def buffer_updated(self, nbytes):
        if self.status is not None:
            self.body += nbytes
            return
        self.head += _VIEW[:nbytes]
        if self.dialog:
            self.rtsp_head()
            return
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD:
                self.fail("response header too large")
            return
        status_line = bytes(self.head.split(b"\r\n", 1)[0])
        parts = status_line.split()
        try:
            self.status = int(parts[1])
        except (IndexError, ValueError):
            self.status = 0
        if self.status != 200:
            self.fail(f"HTTP {status_line.decode('latin-1')!r}")
            return
        self.body += len(self.head) - end - 4
        self.head = bytearray()

    def rtsp_head(self):
        while True:
            try:
                r = parse_rtsp_response(self.head)
                if r is None:
                    return
                n, status, headers, body = r
                del self.head[:n]
                nxt = self.dialog.on_response(status, headers, body)
            except RtspError as e:
                self.status = 0
                self.fail(str(e))
                return
            if nxt is not None:
                self.transport.write(nxt)
                continue
            # PLAY answered: what follows is media.
            self.status = 200
            self.body += len(self.head)
            self.head = bytearray()
            interval = min(max(self.dialog.session_timeout / 2, 5.0), 30.0)
            self.schedule_keepalive(interval * random.uniform(0.5, 1.0), interval)
            return

    def schedule_keepalive(self, delay, interval):
        loop = asyncio.get_running_loop()
        self.keepalive_timer = loop.call_later(delay, self.send_keepalive, interval)

    def send_keepalive(self, interval):
        # As ffmpeg does even over TCP: go2rtc drops an RTSP viewer that has
        # sent nothing for 60 s. The answer is counted as body bytes.
        if self.open and self.transport is not None:
            self.transport.write(self.dialog.keepalive())
            self.schedule_keepalive(interval, interval)

    def fail(self, why):
        if self.error is None:
            self.error = why
        self.transport.close()

    def eof_received(self):
        if self.error is None:
            self.error = "server closed the connection"
        return False  # close our side too

    def connection_lost(self, exc):
        self.open = False
        if self.keepalive_timer is not None:
            self.keepalive_timer.cancel()
        if self.error is None:
            self.error = f"connection lost: {exc}" if exc else "connection closed"

    @property
    def receiving(self):
        return self.open and self.status == 200 and self.body > 0


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit(f"bench client: need {need} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


async def open_reader(loop, port, make_reader, gate):
    r = make_reader()
    # The gate paces connect() so a burst of N SYNs does not overflow the
    # server's accept backlog (which would show up as 1 s retransmits).
    async with gate:
        try:
            await loop.create_connection(lambda: r, "127.0.0.1", port)
        except OSError as e:
            r.error = f"connect: {e.strerror or e}"
    return r


def summarize_errors(readers):
    counts = {}
    for r in readers:
        if not r.receiving and r.error:
            counts[r.error] = counts.get(r.error, 0) + 1
    return ", ".join(f"{n}x {e}" for e, n in sorted(counts.items(), key=lambda kv: -kv[1]))


async def run_readers(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    window = {}

    # Handlers first: the default action of SIGUSR1/2 would kill us.
    def start_window():
        if not readers:
            log("window start before the readers are open: ignored")
            return
        window["t0"] = time.monotonic()
        window["b0"] = [r.body for r in readers]

    def end_window():
        if "b0" not in window:
            log("window end without a start")
            return
        dt = time.monotonic() - window["t0"]
        deltas = [r.body - b0 for r, b0 in zip(readers, window["b0"])]
        connected = sum(1 for r in readers if r.open and r.status == 200)
        receiving = sum(1 for r, d in zip(readers, deltas) if r.open and d > 0)
        # Over all N readers, failed ones included (as 0): a reader that
        # never got going is exactly the starvation we want to see.
        out(
            "RESULT"
            f" readers={len(readers)} connected={connected} receiving={receiving}"
            f" min={min(deltas)} median={int(statistics.median(deltas))}"
            f" max={max(deltas)} total={sum(deltas)} seconds={dt:.3f}"
        )
        errs = summarize_errors(readers)
        if errs:
            log(f"readers not receiving: {errs}")

    readers = []
    loop.add_signal_handler(signal.SIGUSR1, start_window)
    loop.add_signal_handler(signal.SIGUSR2, end_window)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if args.proto == "rtsp":
        # Both tracks over TCP (interleaved), as Frigate and HA use it.
        url = rtsp_url(args)
        port = args.rtsp_port

        def make_reader():
            return Reader(dialog=RtspDialog(url))

    else:
        request = flv_request(args)
        port = args.port

        def make_reader():
            return Reader(request=request)

    gate = asyncio.Semaphore(args.connect_concurrency)
    t_start = time.monotonic()
    opening = asyncio.gather(*(open_reader(loop, port, make_reader, gate) for _ in range(args.n)))
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({opening, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        opening.cancel()
        return 1
    readers.extend(opening.result())
    t_connected = time.monotonic()

    # Ready when every reader has body bytes, or has failed for good, or we
    # give up waiting (the bench then reports who is not receiving).
    deadline = t_start + args.ready_timeout
    while not stop.is_set():
        alive_waiting = sum(1 for r in readers if r.open and not r.receiving)
        if alive_waiting == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    receiving = sum(1 for r in readers if r.receiving)
    out(
        f"READY readers={len(readers)} receiving={receiving}"
        f" connect_seconds={t_connected - t_start:.2f}"
        f" ready_seconds={time.monotonic() - t_start:.2f}"
    )
    if receiving < len(readers):
        log(f"{len(readers) - receiving} readers not receiving at start: {summarize_errors(readers)}")

    await stop.wait()
    for r in readers:
        if r.transport is not None:
            r.transport.close()
    await asyncio.sleep(0)  # let the transports close
    return 0


def rtsp_url(args):
    return f"rtsp://127.0.0.1:{args.rtsp_port}/{quote(args.stream)}"


def flv_request(args):
    return (
        f"GET /api/stream.flv?src={quote(args.stream)} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{args.port}\r\n"
        "User-Agent: streamvisor-bench-fanout\r\n"
        "Accept: */*\r\n"
        "\r\n"
    ).encode()


def http_get_json(port, path, timeout=5.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return json.load(resp)


def cmd_free_port(args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


def cmd_streams(args):
    info = http_get_json(args.port, f"/api/streams?src={quote(args.stream)}")
    producers = info.get("producers") or []
    consumers = [c for c in info.get("consumers") or [] if not c.get("internal")]
    live = [p for p in producers if p.get("pid")]
    print(f"producer_pid={live[0]['pid'] if live else ''}")
    print(f"producer_state={live[0].get('state', '') if live else ''}")
    print(f"producer_restarts={sum(p.get('restarts', 0) for p in producers)}")
    print(f"consumers={len(consumers)}")
    print(f"drops={sum(c.get('drops', 0) for c in consumers)}")
    print(f"consumers_dropping={sum(1 for c in consumers if c.get('drops', 0))}")
    return 0


def cmd_wait_ready(args):
    """Up when GET /api answers (if --http-port) and --tcp-port accepts."""
    deadline = time.monotonic() + args.timeout
    last = None
    while time.monotonic() < deadline:
        if args.pid and not os.path.exists(f"/proc/{args.pid}"):
            log(f"server pid {args.pid} exited while starting")
            return 1
        try:
            if args.http_port:
                http_get_json(args.http_port, "/api", timeout=1.0)
            if args.tcp_port:
                socket.create_connection(("127.0.0.1", args.tcp_port), timeout=1.0).close()
            return 0
        except (OSError, ValueError, urllib.error.URLError) as e:
            last = e
            time.sleep(0.1)
    log(f"server not ready within {args.timeout} s: {last}")
    return 1


# ---- processes -------------------------------------------------------------


def proc_stat(pid):
    """(state, ppid, pgrp, starttime) of pid from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    # After "(comm)", which may hold spaces: field 3 (state) is rest[0], so
    # field k is rest[k - 3]; starttime is field 22.
    rest = s[s.rfind(b")") + 2 :].split()
    return rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[19])


def descendants(root):
    """{pid: starttime} of every process below root, and of the process
    groups those lead (a producer's pipeline), from one scan of /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(name)
            if st is not None:
                table[int(name)] = st
    children = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in found:
                found.add(c)
                todo.append(c)
    leaders = {p for p in found if table[p][2] == p}
    found |= {p for p, st in table.items() if st[2] in leaders}
    found.discard(root)
    return {p: table[p][3] for p in found}


def still_there(procs):
    """(pids not yet exited, pids not yet reaped) of {pid: starttime}."""
    running, unreaped = [], []
    for pid, start in procs.items():
        st = proc_stat(pid)
        if st is None or st[3] != start:  # gone, or the pid was reused
            continue
        unreaped.append(pid)
        if st[0] not in ("Z", "X"):
            running.append(pid)
    return running, unreaped


# ---- one cold reader -------------------------------------------------------


class ColdError(Exception):
    pass


class Dechunker:
    """HTTP/1.1 chunked transfer coding, undone incrementally."""

    def __init__(self):
        self.buf = bytearray()
        self.left = 0
        self.state = "size"

    def feed(self, data):
        self.buf += data
        out = bytearray()
        while True:
            if self.state == "size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                line = bytes(self.buf[:i]).split(b";")[0].strip()
                del self.buf[: i + 2]
                try:
                    self.left = int(line, 16)
                except ValueError:
                    raise ColdError(f"bad chunk size {line[:20]!r}") from None
                if self.left == 0:
                    self.state = "end"
                    break
                self.state = "data"
            elif self.state == "data":
                take = min(self.left, len(self.buf))
                out += self.buf[:take]
                del self.buf[:take]
                self.left -= take
                if self.left:
                    break
                self.state = "crlf"
            elif self.state == "crlf":
                if len(self.buf) < 2:
                    break
                del self.buf[:2]
                self.state = "size"
            else:
                break
        return bytes(out)


class FlvProbe:
    """Finds the first FLV video tag that carries a coded frame (not the
    AVC sequence header): the first media byte a player can use."""

    def __init__(self):
        self.buf = bytearray()
        self.skip = None  # bytes to drop before the next tag header

    def feed(self, data):
        self.buf += data
        if self.skip is None:
            if len(self.buf) < 9:
                return False
            if self.buf[:3] != b"FLV":
                raise ColdError(f"not FLV: {bytes(self.buf[:9])!r}")
            self.skip = int.from_bytes(self.buf[5:9], "big") + 4  # header + PreviousTagSize0
        while True:
            if self.skip:
                n = min(self.skip, len(self.buf))
                del self.buf[:n]
                self.skip -= n
                if self.skip:
                    return False
            if len(self.buf) < 13:
                return False
            ttype = self.buf[0] & 0x1F
            size = int.from_bytes(self.buf[1:4], "big")
            if ttype == 9 and size >= 2:
                b0 = self.buf[11]
                if b0 & 0x80:  # enhanced RTMP: PacketType CodedFrames(X)
                    if (b0 & 0x0F) in (1, 3):
                        return True
                elif (b0 & 0x0F) != 7 or self.buf[12] == 1:  # AVC NALU
                    return True
            self.skip = 11 + size + 4


def cold_open(args, deadline):
    """Opens one reader on an idle stream: (socket, ms to the response
    header, ms to the first video media byte), timed from before connect."""
    t0 = time.monotonic()

    def left():
        r = deadline - time.monotonic()
        if r <= 0:
            raise ColdError("no media before the timeout")
        return r

    port = args.rtsp_port if args.proto == "rtsp" else args.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=left())
    try:
        head_ms = None
        buf = bytearray()
        if args.proto == "rtsp":
            dialog = RtspDialog(rtsp_url(args))
            sock.sendall(dialog.start())
            while dialog.step != "PLAYING":
                sock.settimeout(left())
                data = sock.recv(65536)
                if not data:
                    raise ColdError(f"server closed the connection during {dialog.step}")
                buf += data
                while dialog.step != "PLAYING":
                    try:
                        r = parse_rtsp_response(buf)
                    except RtspError as e:
                        raise ColdError(str(e)) from None
                    if r is None:
                        break
                    n, status, headers, body = r
                    del buf[:n]
                    if head_ms is None:
                        head_ms = (time.monotonic() - t0) * 1000
                    try:
                        nxt = dialog.on_response(status, headers, body)
                    except RtspError as e:
                        raise ColdError(str(e)) from None
                    if nxt is not None:
                        sock.sendall(nxt)
            video = dialog.video_channel
            if video is None:
                raise ColdError("the stream has no video track")
            while True:
                # Interleaved frames: '$', channel, 16-bit length, payload.
                while len(buf) >= 4:
                    if buf[0] == 0x24:
                        if buf[1] == video:
                            return sock, head_ms, (time.monotonic() - t0) * 1000
                        n = 4 + int.from_bytes(buf[2:4], "big")
                        if len(buf) < n:
                            break
                        del buf[:n]
                    elif buf[:4] == b"RTSP":
                        try:
                            r = parse_rtsp_response(buf)
                        except RtspError as e:
                            raise ColdError(str(e)) from None
                        if r is None:
                            break
                        del buf[: r[0]]
                    else:
                        raise ColdError(f"unexpected bytes after PLAY: {bytes(buf[:8])!r}")
                sock.settimeout(left())
                data = sock.recv(65536)
                if not data:
                    raise ColdError("server closed the connection before any video")
                buf += data
        else:
            sock.sendall(flv_request(args))
            headed = False
            dechunk = None  # a Dechunker when the body is chunked
            probe = FlvProbe()
            while True:
                sock.settimeout(left())
                data = sock.recv(65536)
                if not data:
                    raise ColdError("server closed the connection before any video")
                if not headed:
                    buf += data
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > MAX_HEAD:
                            raise ColdError("response header too large")
                        continue
                    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
                    parts = lines[0].split()
                    if len(parts) < 2 or parts[1] != "200":
                        raise ColdError(f"HTTP {lines[0][:80]!r}")
                    head_ms = (time.monotonic() - t0) * 1000
                    chunked = any(
                        ln.lower().startswith("transfer-encoding:") and "chunked" in ln.lower() for ln in lines[1:]
                    )
                    dechunk = Dechunker() if chunked else None
                    data = bytes(buf[end + 4 :])
                    headed = True
                if dechunk is not None:
                    data = dechunk.feed(data)
                if probe.feed(data):
                    return sock, head_ms, (time.monotonic() - t0) * 1000
    except BaseException:
        sock.close()
        raise


def wait_idle(args, timeout):
    """Waits until the server has no child process (for streamvisor, also
    until its API shows no producer pid): True, or False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{args.server_pid}"):
            raise SystemExit(f"bench client: server pid {args.server_pid} is gone")
        if not descendants(args.server_pid):
            if not args.api_port:
                return True
            try:
                info = http_get_json(args.api_port, f"/api/streams?src={quote(args.stream)}", timeout=2.0)
                if not any(p.get("pid") for p in info.get("producers") or []):
                    return True
            except (OSError, ValueError, urllib.error.URLError):
                pass
        time.sleep(0.05)
    return False


def cmd_cycle(args):
    colds, heads, exits, gones, failures = [], [], [], [], 0
    for i in range(1, args.k + 1):
        if not wait_idle(args, args.idle_timeout):
            out(f"CYCLE i={i} proto={args.proto} error=stream-not-idle-after-{args.idle_timeout:g}s")
            failures += 1
            continue
        time.sleep(args.idle)  # the same settling time for every server
        try:
            sock, head_ms, media_ms = cold_open(args, time.monotonic() + args.timeout)
        except (ColdError, OSError) as e:
            out(f"CYCLE i={i} proto={args.proto} error={str(e).replace(' ', '_')[:120]}")
            failures += 1
            continue
        # Keep reading, as a viewer does, before being the last to leave.
        got, end = 0, time.monotonic() + args.hold
        try:
            while time.monotonic() < end:
                sock.settimeout(max(0.01, min(0.2, end - time.monotonic())))
                try:
                    data = sock.recv(256 * 1024)
                except socket.timeout:
                    continue
                if not data:
                    raise ColdError("server closed the connection while reading")
                got += len(data)
        except (ColdError, OSError) as e:
            sock.close()
            out(f"CYCLE i={i} proto={args.proto} error={str(e).replace(' ', '_')[:120]}")
            failures += 1
            continue
        procs = descendants(args.server_pid)
        t0 = time.monotonic()
        sock.close()
        exit_ms = gone_ms = None
        while True:
            running, unreaped = still_there(procs)
            now = (time.monotonic() - t0) * 1000
            if exit_ms is None and not running:
                exit_ms = now
            if not unreaped:
                gone_ms = now
                break
            if now > args.timeout * 1000:
                break
            time.sleep(0.002)
        colds.append(media_ms)
        heads.append(head_ms)
        fields = (
            f"CYCLE i={i} proto={args.proto} head_ms={head_ms:.1f} first_media_ms={media_ms:.1f}"
            f" hold_kbit_s={got * 8 / args.hold / 1000:.0f} producers={','.join(map(str, sorted(procs))) or 'none'}"
        )
        if not procs:
            out(fields + " error=no-child-process-while-playing")
            failures += 1
            continue
        if gone_ms is None:
            out(fields + f" error=still-running-after-{args.timeout:g}s pids={','.join(map(str, unreaped))}")
            failures += 1
            continue
        exits.append(exit_ms)
        gones.append(gone_ms)
        out(fields + f" exit_ms={exit_ms:.1f} gone_ms={gone_ms:.1f}")

    def stat(name, xs):
        if not xs:
            return f" {name}_median_ms=n/a {name}_max_ms=n/a"
        return f" {name}_median_ms={statistics.median(xs):.0f} {name}_max_ms={max(xs):.0f}"

    out(
        f"SUMMARY proto={args.proto} k={args.k} ok={len(colds)} failures={failures}"
        + stat("head", heads)
        + stat("cold", colds)
        + stat("exit", exits)
        + stat("gone", gones)
    )
    return 0


# ---- the table -------------------------------------------------------------


def as_number(v):
    try:
        return float(v)
    except ValueError:
        return None


def higher_is_better(metric):
    """kbit/s and counts of what arrived: more is better. Everything else
    in the table (cpu, memory, times, losses) is a cost."""
    return "kbit/s" in metric or "receiving" in metric or "fps" in metric


def cmd_table(args):
    """Rows: TSV `section<TAB>metric<TAB>role<TAB>value`, role `ours` or a
    peer's kind (go2rtc, mediamtx), and `#label<TAB>role<TAB>name` for the
    column heads. Columns: streamvisor, each peer in the order their labels
    came, and the ratio of streamvisor to the best peer on that row."""
    labels = {"ours": "streamvisor"}
    rows, values = [], {}
    with open(args.file) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3 and parts[0] == "#label":
                labels.setdefault(parts[1], parts[2])
                continue
            if len(parts) != 4:
                continue
            key = (parts[0], parts[1])
            if key not in values:
                rows.append(key)
                values[key] = {}
            values[key][parts[2]] = parts[3]
    # Each workload's rows together, workloads in the order they ran.
    order = {}
    for sec, _ in rows:
        order.setdefault(sec, len(order))
    rows.sort(key=lambda k: order[k[0]])
    peers = [r for r in labels if r != "ours"]
    head = ["workload", "metric", labels["ours"]] + [labels[p] for p in peers]
    if peers:
        head.append("ratio to the best peer")
    table = []
    last = None
    for key in rows:
        v = values[key]
        ours = v.get("ours", "-")
        row = [key[0] if key[0] != last else "", key[1], ours]
        last = key[0]
        # "n/a": the peer was run and cannot serve it; "-": not run.
        row += [v.get(p, "-") for p in peers]
        if peers:
            a = as_number(ours)
            theirs = [(as_number(v.get(p, "")), p) for p in peers]
            theirs = [(b, p) for b, p in theirs if b is not None]
            ratio = "-"
            if a is not None and theirs and "receiving" not in key[1] and "busy" not in key[1]:
                pick = max if higher_is_better(key[1]) else min
                b, p = pick(theirs)
                if b != 0.0:
                    ratio = f"{a / b:.2f}" + (f" ({labels[p].split()[0]})" if len(theirs) > 1 else "")
            row.append(ratio)
        table.append(row)
    if args.format == "markdown":
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join(["---", "---"] + ["---:"] * (len(head) - 2)) + " |")
        for row in table:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[c]) for r in table + [head]) for c in range(len(head))]

        def fmt(r):
            return "  ".join(x.ljust(w) if c < 2 else x.rjust(w) for c, (x, w) in enumerate(zip(r, widths)))

        print(fmt(head))
        print("  ".join("-" * w for w in widths))
        for row in table:
            print(fmt(row))
    if peers:
        print()
        print(
            "ratio = streamvisor / the best peer on that row (the lowest cost, or the most"
            " kbit/s): below 1 is streamvisor using less or being faster; for kbit/s, 1 is"
            " both delivering the whole stream. n/a: the peer cannot serve that workload."
        )
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-port")
    s = sub.add_parser("streams")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--stream", default="bench")
    r = sub.add_parser("readers")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--stream", default="bench")
    r.add_argument("--proto", choices=["flv", "rtsp"], default="flv")
    r.add_argument("--rtsp-port", type=int, default=0)
    r.add_argument("-n", type=int, default=500)
    r.add_argument("--ready-timeout", type=float, default=60.0)
    r.add_argument("--connect-concurrency", type=int, default=64)
    w = sub.add_parser("wait-ready")
    w.add_argument("--http-port", type=int, default=0)
    w.add_argument("--tcp-port", type=int, default=0)
    w.add_argument("--pid", type=int, default=0)
    w.add_argument("--timeout", type=float, default=20.0)
    c = sub.add_parser("cycle")
    c.add_argument("--server-pid", type=int, required=True)
    c.add_argument("--port", type=int, default=0, help="HTTP port (HTTP-FLV)")
    c.add_argument("--rtsp-port", type=int, default=0)
    c.add_argument("--api-port", type=int, default=0, help="streamvisor's API: also wait for no producer pid")
    c.add_argument("--stream", default="bench")
    c.add_argument("--proto", choices=["flv", "rtsp"], default="flv")
    c.add_argument("-k", type=int, default=5)
    c.add_argument("--hold", type=float, default=2.0, help="seconds the reader reads before leaving")
    c.add_argument("--idle", type=float, default=1.0, help="seconds to wait once the stream is idle")
    c.add_argument("--idle-timeout", type=float, default=60.0)
    c.add_argument("--timeout", type=float, default=30.0, help="for the first media byte, and for teardown")
    t = sub.add_parser("table")
    t.add_argument("file")
    t.add_argument("--format", choices=["text", "markdown"], default="text")
    args = p.parse_args()

    if args.cmd == "free-port":
        return cmd_free_port(args)
    if args.cmd == "wait-ready":
        return cmd_wait_ready(args)
    if args.cmd == "streams":
        return cmd_streams(args)
    if args.cmd == "cycle":
        return cmd_cycle(args)
    if args.cmd == "table":
        return cmd_table(args)
    raise_fd_limit(args.n + 64)
    return asyncio.run(run_readers(args))


if __name__ == "__main__":
    sys.exit(main())
