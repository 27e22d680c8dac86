#!/usr/bin/env python3
"""Load generator and API helper for scripts/bench-fanout (stdlib only).

Subcommands:
  free-port             print a free loopback TCP port
  wait-api  --port P    wait until GET /api answers 200
  streams   --port P    print the stream's producer pid and consumer stats
                        from /api/streams, as key=value lines
  readers   --port P -n N
                        open N HTTP-FLV readers, print READY once all of them
                        receive data; SIGUSR1 opens the measurement window,
                        SIGUSR2 closes it and prints RESULT; SIGTERM ends.

The readers run on the same (2-core) machine as the server they measure,
so every CPU cycle spent here is one the server may not get. Hence:
asyncio's BufferedProtocol (the loop calls recv_into straight into our
buffer, no coroutine or bytes object per read), one 256 KiB buffer shared
by all readers (they discard what they read), and one event loop.
"""

import argparse
import asyncio
import json
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


class Reader(asyncio.BufferedProtocol):
    """One HTTP-FLV viewer: sends the GET, checks the status, then counts and
    discards every byte (chunk framing included)."""

    def __init__(self, request):
        self.request = request
        self.transport = None
        self.head = bytearray()
        self.status = None  # set once the response header is complete
        self.body = 0  # bytes after the header
        self.open = False
        self.error = None

    def connection_made(self, transport):
        self.transport = transport
        self.open = True
        transport.write(self.request)

    def get_buffer(self, sizehint):
        return _VIEW

    def buffer_updated(self, nbytes):
        if self.status is not None:
            self.body += nbytes
            return
        self.head += _VIEW[:nbytes]
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


async def open_reader(loop, port, request, gate):
    r = Reader(request)
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

    port = args.port
    if args.proto == "rtsp":
        # Pipelined: streamvisor ties SETUP and PLAY to the session the
        # DESCRIBE on the same connection made, so one write does it.
        # Both tracks over TCP (interleaved), as Frigate and HA use it.
        url = f"rtsp://127.0.0.1:{args.rtsp_port}/{quote(args.stream)}"
        request = (
            f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
            f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
            f"SETUP {url}/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=2-3\r\n\r\n"
            f"PLAY {url} RTSP/1.0\r\nCSeq: 4\r\n\r\n"
        ).encode()
        port = args.rtsp_port
    else:
        request = (
            f"GET /api/stream.flv?src={quote(args.stream)} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{args.port}\r\n"
            "User-Agent: streamvisor-bench-fanout\r\n"
            "Accept: */*\r\n"
            "\r\n"
        ).encode()
    gate = asyncio.Semaphore(args.connect_concurrency)
    t_start = time.monotonic()
    opening = asyncio.gather(*(open_reader(loop, port, request, gate) for _ in range(args.n)))
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


def http_get_json(port, path, timeout=5.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return json.load(resp)


def cmd_free_port(args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


def cmd_wait_api(args):
    deadline = time.monotonic() + args.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            http_get_json(args.port, "/api", timeout=1.0)
            return 0
        except (OSError, ValueError, urllib.error.URLError) as e:
            last = e
            time.sleep(0.1)
    log(f"/api did not answer within {args.timeout} s: {last}")
    return 1


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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-port")
    w = sub.add_parser("wait-api")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--timeout", type=float, default=20.0)
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
    args = p.parse_args()

    if args.cmd == "free-port":
        return cmd_free_port(args)
    if args.cmd == "wait-api":
        return cmd_wait_api(args)
    if args.cmd == "streams":
        return cmd_streams(args)
    raise_fd_limit(args.n + 64)
    return asyncio.run(run_readers(args))


if __name__ == "__main__":
    sys.exit(main())
