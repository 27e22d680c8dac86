#!/usr/bin/env python3
"""HLS players for scripts/bench-hls (stdlib only): N players in one process.

  players --url URL [--stages 1,200] [--spread S] [--ready-timeout S]

Each player plays live HLS the way hls.js does, without decoding:

- GET the URL; a multivariant playlist (EXT-X-STREAM-INF) sends it to the
  first variant, and to the variant's default audio rendition when that has
  its own URI (MediaMTX's fMP4 muxer puts audio apart; hls.js then runs an
  audio stream controller beside the main one). Each rendition has its own
  keep-alive connection, as a browser would open.
- Start at the live edge less three target durations (hls.js's
  liveSyncDurationCount = 3), then fetch every new segment in order, and
  each EXT-X-MAP init segment once.
- Reload the media playlist one target duration after the last load began
  (or the last segment's duration, when shorter: hls.js's
  computeReloadInterval near the live edge), and half a target duration
  when it did not change (RFC 8216 §6.3.4). Plain HLS only: no
  EXT-X-PART, no blocking reloads (we never send _HLS_msn), so a
  low-latency server is played as hls.js plays it with lowLatencyMode off.

Players check themselves: every segment must come whole (the body as long
as Content-Length or the chunked encoding says; MPEG-TS a whole number of
188-byte packets, each starting 0x47; fMP4 boxes that tile the body and
hold an mdat), in sequence (each segment's media sequence number one more
than the last one fetched), and none missing (a playlist whose first
segment is past the next one we need, or a segment that answers 404).

Stages: the players of the first stage start, READY is printed once each
has a segment (or --ready-timeout passed); SIGUSR1 opens a measurement
window, SIGUSR2 closes it and prints RESULT; then the next stage's players
join (the first ones keep playing) and the same repeats. SIGTERM ends.
Starts are spread at random over --spread seconds, so that N players do
not poll in lockstep (real viewers open the page at different times).

RESULT, over the window: players, receiving (got bytes), played (got
segments, none missing or broken); min/median/max/mean bytes per player
(segments and init segments); segments, missing, bad, errors in all; and
window_segments/window_bytes: what the first player's last playlist
lists, summed over its renditions (sizes it did not fetch count as the
mean of those it did).
"""

import argparse
import asyncio
import random
import resource
import signal
import statistics
import sys
import time
from urllib.parse import urljoin, urlsplit

# Beside us in scripts/: its line printer (flushed, for the bench's polling).
from bench_fanout_client import out

# A response header larger than this is not the server we are measuring.
MAX_HEAD = 16 * 1024
# A playlist larger than this is not a live one.
MAX_PLAYLIST = 1024 * 1024
# Each request is bounded: a server that stops answering is an error, not
# a hang of the bench.
REQUEST_TIMEOUT = 10.0
# hls.js retries a failed playlist load after a back-off; ours is fixed.
RETRY = 0.5
TS_PACKET = 188
# hls.js's liveSyncDurationCount: where a live stream starts, in target
# durations behind the playlist's end.
LIVE_SYNC_COUNT = 3


def log(msg):
    print(f"hls client: {msg}", file=sys.stderr, flush=True)


class HttpError(Exception):
    pass


class Conn:
    """One keep-alive HTTP/1.1 connection to one host, reopened when the
    server closes it."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def get(self, target):
        """GET target (path?query) -> (status, body bytes). One retry on a
        fresh connection if a reused one turns out closed."""
        for attempt in (0, 1):
            reused = self.writer is not None
            try:
                return await asyncio.wait_for(self._get(target), REQUEST_TIMEOUT)
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                self.close()
                if not reused or attempt:
                    raise HttpError(f"GET {target}: {e.__class__.__name__}") from None
            except asyncio.TimeoutError:
                self.close()
                raise HttpError(f"GET {target}: no answer within {REQUEST_TIMEOUT:.0f} s") from None
            except OSError as e:
                self.close()
                raise HttpError(f"GET {target}: {e.strerror or e}") from None
            except ValueError as e:
                # A status, length or chunk size that is not a number.
                self.close()
                raise HttpError(f"GET {target}: malformed response: {e}") from None
        raise AssertionError("unreachable")

    async def _get(self, target):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        self.writer.write(
            (
                f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "User-Agent: streamvisor-bench-hls\r\nAccept: */*\r\n\r\n"
            ).encode()
        )
        r = self.reader
        try:
            head = await r.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ConnectionError("response header too large") from None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ConnectionError(f"not an HTTP response: {lines[0][:60]!r}")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        close = headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size_line = await r.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, if any, end with an empty line.
                    while await r.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                chunks.append(await r.readexactly(size))
                if await r.readexactly(2) != b"\r\n":
                    raise ConnectionError("bad chunk framing")
            body = b"".join(chunks)
        elif "content-length" in headers:
            body = await r.readexactly(int(headers["content-length"]))
        else:
            # No length: the body runs to the end of the connection.
            body = await r.read()
            close = True
        if close:
            self.close()
        return status, body


# ---- playlists ---------------------------------------------------------------


def attrs(s):
    """EXT-X-...:A=B,C="D,E" -> {A: B, C: D,E}."""
    out_, key, quoted, cur = {}, None, False, []
    for ch in s + ",":
        if ch == '"':
            quoted = not quoted
        elif ch == "=" and key is None and not quoted:
            key = "".join(cur).strip()
            cur = []
        elif ch == "," and not quoted:
            if key is not None:
                out_[key] = "".join(cur).strip()
            key, cur = None, []
        else:
            cur.append(ch)
    return out_


class Media:
    """A media playlist: (seq, duration, uri, map_uri) per segment."""

    def __init__(self, text, base):
        self.target = None
        self.seq0 = 0
        self.segments = []
        self.ended = False
        seq = None
        duration = None
        map_uri = None
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#EXT-X-TARGETDURATION:"):
                self.target = float(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                self.seq0 = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-MAP:"):
                map_uri = urljoin(base, attrs(line.split(":", 1)[1])["URI"])
            elif line.startswith("#EXTINF:"):
                duration = float(line.split(":", 1)[1].split(",", 1)[0])
            elif line.startswith("#EXT-X-ENDLIST"):
                self.ended = True
            elif not line.startswith("#"):
                if seq is None:
                    seq = self.seq0
                self.segments.append((seq, duration or 0.0, urljoin(base, line), map_uri))
                seq += 1
                duration = None
        if self.target is None:
            raise ValueError("media playlist without EXT-X-TARGETDURATION")

    @property
    def last_seq(self):
        return self.segments[-1][0] if self.segments else self.seq0 - 1


def variant_urls(text, base):
    """A multivariant playlist -> [main URL, audio URL?] (the first variant,
    and its default audio rendition when that has a URI); [] when this is
    a media playlist."""
    lines = [x.strip() for x in text.splitlines()]
    audio = {}
    main = None
    group = None
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-MEDIA:"):
            a = attrs(line.split(":", 1)[1])
            if a.get("TYPE") == "AUDIO" and "URI" in a:
                g = audio.setdefault(a.get("GROUP-ID", ""), [])
                # The default rendition first, as hls.js picks it.
                g.insert(0 if a.get("DEFAULT") == "YES" else len(g), urljoin(base, a["URI"]))
        elif line.startswith("#EXT-X-STREAM-INF:") and main is None:
            group = attrs(line.split(":", 1)[1]).get("AUDIO")
            for nxt in lines[i + 1 :]:
                if nxt and not nxt.startswith("#"):
                    main = urljoin(base, nxt)
                    break
    if main is None:
        return []
    urls = [main]
    if group is not None and audio.get(group):
        urls.append(audio[group][0])
    return urls


# ---- segment checks ----------------------------------------------------------


def check_ts(body):
    """Whole MPEG-TS: a whole number of packets, every one in sync."""
    n, rest = divmod(len(body), TS_PACKET)
    if n == 0 or rest:
        return f"{len(body)} bytes is not a whole number of TS packets"
    if body[::TS_PACKET] != b"\x47" * n:
        return "a TS packet without its 0x47 sync byte"
    return None


def check_boxes(body, need):
    """Whole ISO BMFF: top-level boxes tile the body, and `need` is among them."""
    off, seen = 0, set()
    while off < len(body):
        if off + 8 > len(body):
            return f"a box header cut at byte {off} of {len(body)}"
        size = int.from_bytes(body[off : off + 4], "big")
        kind = bytes(body[off + 4 : off + 8])
        if size == 1 and off + 16 <= len(body):
            size = int.from_bytes(body[off + 8 : off + 16], "big")
        elif size == 0:
            size = len(body) - off
        if size < 8 or off + size > len(body):
            return f"box {kind!r} of {size} bytes at {off} overruns the {len(body)}-byte body"
        seen.add(kind)
        off += size
    if need not in seen:
        return f"no {need.decode()} box"
    return None


def check_segment(body):
    if body[:1] == b"\x47":
        return check_ts(body)
    return check_boxes(body, b"mdat")


# ---- players -----------------------------------------------------------------


class Player:
    def __init__(self, index):
        self.index = index
        self.media_bytes = 0  # segments and init segments
        self.segments = 0
        self.missing = 0
        self.bad = 0
        self.errors = 0
        self.error = None  # the last one, for the summary
        self.first_segment = False
        # The first rendition's last playlist and the sizes of its segments,
        # for what one stream's window of segments holds.
        self.window = {}  # rendition index -> (listed seqs, {seq: size})

    def counters(self):
        return (self.media_bytes, self.segments, self.missing, self.bad, self.errors)

    def fail(self, why):
        self.errors += 1
        self.error = why


def split_target(url):
    u = urlsplit(url)
    return u.path + (f"?{u.query}" if u.query else "")


async def play(player, url, host, port, stop):
    conn = Conn(host, port)
    try:
        # The entry point; a cold server may answer 404 until its muxer has
        # segments (MediaMTX), as hls.js would retry.
        while not stop.is_set():
            try:
                status, body = await conn.get(split_target(url))
            except HttpError as e:
                player.fail(str(e))
                await asyncio.sleep(RETRY)
                continue
            if status == 200 and len(body) <= MAX_PLAYLIST:
                break
            player.fail(f"GET {split_target(url)}: HTTP {status}")
            await asyncio.sleep(RETRY)
        else:
            return
        text = body.decode("utf-8", "replace")
        if not text.startswith("#EXTM3U"):
            player.fail("the entry point is not a playlist")
            return
        urls = variant_urls(text, url)
        if not urls:
            # A media playlist at the entry point (streamvisor's).
            await rendition(player, 0, url, conn, stop, first=text)
            return
        conns = [conn] + [Conn(host, port) for _ in urls[1:]]
        try:
            await asyncio.gather(*(rendition(player, i, u, c, stop) for i, (u, c) in enumerate(zip(urls, conns))))
        finally:
            for c in conns[1:]:
                c.close()
    finally:
        conn.close()


async def rendition(player, index, url, conn, stop, first=None):
    last = None  # media sequence number of the last segment fetched
    prev_end = None
    maps = set()
    sizes = {}
    target = split_target(url)
    while not stop.is_set():
        t0 = time.monotonic()
        if first is not None:
            text, first = first, None
        else:
            try:
                status, body = await conn.get(target)
            except HttpError as e:
                player.fail(str(e))
                await asyncio.sleep(RETRY)
                continue
            if status != 200 or len(body) > MAX_PLAYLIST:
                player.fail(f"GET {target}: HTTP {status}")
                await asyncio.sleep(RETRY)
                continue
            text = body.decode("utf-8", "replace")
        try:
            pl = Media(text, url)
        except (ValueError, KeyError) as e:
            player.fail(f"{target}: {e}")
            await asyncio.sleep(RETRY)
            continue
        updated = pl.last_seq != prev_end
        prev_end = pl.last_seq
        todo = pl.segments
        if last is None and todo:
            # hls.js's live start: the segment holding (end - 3 targets).
            edge = sum(d for _, d, _, _ in todo)
            pos = edge - LIVE_SYNC_COUNT * pl.target
            t = 0.0
            for i, (_, d, _, _) in enumerate(todo):
                if t + d > pos:
                    todo = todo[i:]
                    break
                t += d
        elif last is not None:
            if pl.segments and pl.segments[0][0] > last + 1:
                # Segments left the playlist before we fetched them.
                player.missing += pl.segments[0][0] - last - 1
                player.fail(f"segments {last + 1}..{pl.segments[0][0] - 1} left the playlist unfetched")
                last = pl.segments[0][0] - 1
            elif pl.last_seq < last:
                player.fail(f"media sequence went back from {last} to {pl.last_seq}")
                last = pl.last_seq
            todo = [s for s in pl.segments if s[0] > last]
        for seq, _, seg_url, map_url in todo:
            if stop.is_set():
                return
            if map_url is not None and map_url not in maps:
                try:
                    status, body = await conn.get(split_target(map_url))
                except HttpError as e:
                    player.fail(str(e))
                    break
                if status != 200:
                    player.fail(f"init segment: HTTP {status}")
                    break
                why = check_boxes(body, b"moov")
                if why:
                    player.bad += 1
                    player.fail(f"init segment: {why}")
                maps.add(map_url)
                player.media_bytes += len(body)
            try:
                status, body = await conn.get(split_target(seg_url))
            except HttpError as e:
                player.fail(str(e))
                break
            if last is not None and seq != last + 1:
                player.fail(f"segment {seq} after {last}")
            last = seq
            if status != 200:
                player.missing += 1
                player.fail(f"segment {seq}: HTTP {status}")
                continue
            why = check_segment(body)
            if why:
                player.bad += 1
                player.fail(f"segment {seq}: {why}")
                continue
            player.media_bytes += len(body)
            player.segments += 1
            player.first_segment = True
            sizes[seq] = len(body)
        listed = [s[0] for s in pl.segments]
        for s in [s for s in sizes if s < (listed[0] if listed else 0)]:
            del sizes[s]
        player.window[index] = (listed, sizes)
        # hls.js: one target duration after the load began, or the last
        # segment's duration when shorter; half a target when unchanged.
        if updated:
            interval = pl.target
            if pl.segments and 0 < pl.segments[-1][1] < interval:
                interval = pl.segments[-1][1]
        else:
            interval = pl.target / 2
        if pl.ended:
            return
        wait = interval - (time.monotonic() - t0)
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except asyncio.TimeoutError:
                pass


def window_of(player):
    """(segments listed in the main playlist, their bytes summed over the
    renditions): what one stream's window holds. Sizes we did not fetch
    (listed before we joined) count as the mean of those we did."""
    listed_main, total = 0, 0
    for index, (listed, sizes) in sorted(player.window.items()):
        known = [sizes[s] for s in listed if s in sizes]
        if index == 0:
            listed_main = len(listed)
        if known:
            total += sum(known) + (len(listed) - len(known)) * sum(known) / len(known)
    return listed_main, int(total)


def summarize_errors(players):
    counts = {}
    for p in players:
        if p.error:
            # Segment numbers vary: group by the words around them.
            key = " ".join(w for w in p.error.split() if not any(c.isdigit() for c in w))
            counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n}x {e}" for e, n in sorted(counts.items(), key=lambda kv: -kv[1])[:5])


async def run_players(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    u = urlsplit(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    players, tasks = [], []
    window = {}
    result = asyncio.Event()

    def start_window():
        window["t0"] = time.monotonic()
        window["c0"] = [p.counters() for p in players]
        for p in players:
            p.error = None

    def end_window():
        if "c0" not in window:
            log("window end without a start")
            return
        dt = time.monotonic() - window.pop("t0")
        c0 = window.pop("c0")
        d = [tuple(b - a for a, b in zip(c, p.counters())) for c, p in zip(c0, players)]
        nbytes = [x[0] for x in d]
        receiving = sum(1 for x in d if x[0] > 0)
        # Played: new segments in the window, none missing, none broken.
        played = sum(1 for x in d if x[1] > 0 and x[2] == 0 and x[3] == 0)
        listed, wbytes = window_of(players[0])
        out(
            "RESULT"
            f" players={len(players)} receiving={receiving} played={played}"
            f" min={min(nbytes)} median={int(statistics.median(nbytes))} max={max(nbytes)}"
            f" mean={int(statistics.mean(nbytes))}"
            f" segments={sum(x[1] for x in d)} missing={sum(x[2] for x in d)}"
            f" bad={sum(x[3] for x in d)} errors={sum(x[4] for x in d)}"
            f" window_segments={listed} window_bytes={wbytes} seconds={dt:.3f}"
        )
        errs = summarize_errors(players)
        if errs:
            log(f"{len(players)} players, in the window: {errs}")
        result.set()

    loop.add_signal_handler(signal.SIGUSR1, start_window)
    loop.add_signal_handler(signal.SIGUSR2, end_window)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def start(p, delay):
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return
        except asyncio.TimeoutError:
            pass
        await play(p, args.url, host, port, stop)

    def crashed(t):
        if not t.cancelled() and t.exception() is not None:
            log(f"a player crashed: {t.exception()!r}")

    for stage in args.stages:
        t_start = time.monotonic()
        new = [Player(i) for i in range(len(players), stage)]
        players.extend(new)
        for p in new:
            t = asyncio.ensure_future(start(p, random.uniform(0, args.spread)))
            t.add_done_callback(crashed)
            tasks.append(t)
        deadline = t_start + args.ready_timeout
        while not stop.is_set() and time.monotonic() < deadline:
            if all(p.first_segment for p in players):
                break
            await asyncio.sleep(0.05)
        playing = sum(1 for p in players if p.first_segment)
        out(f"READY players={len(players)} playing={playing} ready_seconds={time.monotonic() - t_start:.2f}")
        if playing < len(players):
            log(f"{len(players) - playing} players have no segment yet: {summarize_errors(players)}")
        result.clear()
        waiter = asyncio.ensure_future(result.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        if stop.is_set():
            break
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("players")
    r.add_argument("--url", required=True, help="the entry playlist (multivariant or media)")
    r.add_argument("--stages", default="1", help="players in all after each stage: 1,200")
    r.add_argument("--spread", type=float, default=2.0, help="seconds over which a stage's players start")
    r.add_argument("--ready-timeout", type=float, default=60.0)
    args = p.parse_args()
    try:
        args.stages = [int(x) for x in args.stages.split(",")]
    except ValueError:
        p.error("--stages: whole numbers, comma-separated")
    if not args.stages or any(b <= a for a, b in zip([0] + args.stages, args.stages)):
        p.error("--stages must increase: 1,200")
    # Two connections per player at most (video and audio renditions).
    need = 2 * args.stages[-1] + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY else need, hard))
    return asyncio.run(run_players(args))


if __name__ == "__main__":
    sys.exit(main())
