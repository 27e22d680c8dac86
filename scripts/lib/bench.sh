# shellcheck shell=bash
# Shared by scripts/bench-*: servers (ours and a peer's), their configs,
# /proc helpers, and a cleanup that leaves no process and no file behind.
# Sourced by bash scripts running with `set -euo pipefail`; BENCH names the
# script in messages.
#
# A "server" is streamvisor (target/release/streamvisor, or --bin) or the
# peer (--peer PATH: a go2rtc or MediaMTX binary), run on free loopback
# ports with one stream, `bench`, that loops the same test file with
# `-c copy`, started by the first viewer and stopped after the last one.
# Only the server's own process is measured: its ffmpeg and our readers
# are reported apart.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/target/release/streamvisor
CLIENT=$ROOT/scripts/bench_fanout_client.py
MEDIA_DIR=$ROOT/target/bench
# The name carries the recipe: change the recipe, change the name, and the
# stale cached file is simply not used.
MEDIA=$MEDIA_DIR/testsrc2-1280x720p25-h264-1900k-aac96k-30s.mp4
# --codec h265: the same picture as H.265 (what current Hikvision, Dahua
# and Reolink main streams send), at the same bit rate.
MEDIA_H265=$MEDIA_DIR/testsrc2-1280x720p25-h265-1900k-aac96k-30s.mp4
CODEC=h264
INGEST=flv
STREAM=bench

die() { echo "${BENCH:-bench}: $*" >&2; exit 1; }
note() { echo "${BENCH:-bench}: $*" >&2; }

# ---- options every bench script takes ------------------------------------------

PEER=
PEER_KIND=
PEER_VERSION=
NO_BUILD=
RESULTS=
PRINT_CONFIG=
PEER_ONLY=
GO2RTC_SOURCE=flv

BENCH_COMMON_USAGE="common options:
  --peer PATH          also run this go2rtc or MediaMTX binary on the same workload
  --peer-kind KIND     go2rtc or mediamtx, when the name and --version do not tell
  --peer-only          run the peer alone (scripts/bench, for its second peer)
  --go2rtc-source S    flv (default): the same ffmpeg FLV-on-stdout as ours
                       (go2rtc exec: pipe); rtsp: ffmpeg publishes to go2rtc
  --codec C            h264 (default) or h265: the test file's video. With
                       h265 go2rtc's source is rtsp (FLV cannot carry it)
  --ingest I           streamvisor's producer: flv (default: FLV on stdout,
                       as for H.264 cameras) or rtsp (the RTSP publish-back
                       an H.265 or Opus camera moves to), for what it costs
  --bin PATH           the streamvisor binary to measure (no cargo build)
  --no-build           use target/release/streamvisor as it is
  --results FILE       append the figures to FILE (TSV, for scripts/bench)
  --print-config       print the configs that would be run, and exit"

# bench_common_opt "$@": takes one common option off the front. Sets
# BENCH_SHIFT to the number of words used (0: not a common option).
bench_common_opt() {
    BENCH_SHIFT=0
    case ${1:-} in
    --peer) [[ $# -ge 2 ]] || die "--peer needs a path"; PEER=$2; BENCH_SHIFT=2 ;;
    --peer-kind) [[ $# -ge 2 ]] || die "--peer-kind needs go2rtc or mediamtx"; PEER_KIND=$2; BENCH_SHIFT=2 ;;
    --go2rtc-source) [[ $# -ge 2 ]] || die "--go2rtc-source needs flv or rtsp"; GO2RTC_SOURCE=$2; BENCH_SHIFT=2 ;;
    --codec) [[ $# -ge 2 && ($2 == h264 || $2 == h265) ]] || die "--codec needs h264 or h265"; CODEC=$2; BENCH_SHIFT=2 ;;
    --ingest) [[ $# -ge 2 && ($2 == flv || $2 == rtsp) ]] || die "--ingest needs flv or rtsp"; INGEST=$2; BENCH_SHIFT=2 ;;
    --bin) [[ $# -ge 2 ]] || die "--bin needs a path"; BIN=$2; NO_BUILD=1; BENCH_SHIFT=2 ;;
    --no-build) NO_BUILD=1; BENCH_SHIFT=1 ;;
    --peer-only) PEER_ONLY=1; BENCH_SHIFT=1 ;;
    --results) [[ $# -ge 2 ]] || die "--results needs a file"; RESULTS=$2; BENCH_SHIFT=2 ;;
    --print-config) PRINT_CONFIG=1; BENCH_SHIFT=1 ;;
    esac
    return 0
}

# ---- /proc -----------------------------------------------------------------------

# Fields of /proc/PID/stat after "(comm)", which may itself hold spaces:
# [0]=state [1]=ppid [2]=pgrp ... [11]=utime [12]=stime ... [19]=starttime.
proc_stat() {
    local s
    { s=$(<"/proc/$1/stat"); } 2>/dev/null || return 1
    echo "${s##*) }"
}
proc_start() { # PID -> its start time (clock ticks after boot): tells a reused pid apart
    local s f
    s=$(proc_stat "$1") || return 1
    read -ra f <<<"$s"
    echo "${f[19]}"
}

# The direct children of PID.
children_of() {
    local d s f
    for d in /proc/[0-9]*; do
        s=$(proc_stat "${d#/proc/}") || continue
        read -ra f <<<"$s"
        [[ ${f[1]} == "$1" ]] && echo "${d#/proc/}"
    done
    return 0
}

# Every process below PID (one scan of /proc), as "pid:starttime" words.
# A producer may lead its own process group (streamvisor's, MediaMTX's),
# and then it does not die with a SIGKILLed server: we must find it.
descendants_of() {
    local d s f pid
    local -A parent=() start=()
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        s=$(proc_stat "$pid") || continue
        read -ra f <<<"$s"
        parent[$pid]=${f[1]}
        start[$pid]=${f[19]}
    done
    local -a todo=("$1")
    local -A seen=()
    while ((${#todo[@]})); do
        local p=${todo[-1]}
        unset 'todo[-1]'
        for pid in "${!parent[@]}"; do
            if [[ ${parent[$pid]} == "$p" && -z ${seen[$pid]:-} ]]; then
                seen[$pid]=1
                todo+=("$pid")
                echo "$pid:${start[$pid]}"
            fi
        done
    done
    return 0
}

# busy and total jiffies of the whole machine, from the first line of /proc/stat
machine_ticks() {
    local cpu user nice sys idle iowait rest
    read -r cpu user nice sys idle iowait rest </proc/stat
    local -a r
    read -ra r <<<"$rest"
    local total=$((user + nice + sys + idle + iowait + r[0] + r[1] + r[2]))
    echo "$((total - idle - iowait)) $total"
}
# % busy of the whole machine over one second, before we start anything:
# the load average would also count our own previous runs.
machine_busy_now() {
    local b0 a0 b1 a1
    read -r b0 a0 < <(machine_ticks)
    sleep 1
    read -r b1 a1 < <(machine_ticks)
    awk -v b="$((b1 - b0))" -v t="$((a1 - a0))" 'BEGIN { printf "%.0f", (t > 0 ? b / t * 100 : 0) }'
}
ticks() { # PID -> utime+stime in clock ticks (its children's time not included); -1: gone
    local s f
    s=$(proc_stat "$1") || { echo -1; return 0; }
    read -ra f <<<"$s"
    echo $((f[11] + f[12]))
}
# key=value words of a client's line, into the associative array named $1.
parse_kv() { # ARRAY LINE
    local -n a=$1
    local w
    for w in $2; do [[ $w == *=* ]] && a[${w%%=*}]=${w#*=}; done
    return 0
}

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
# Wait up to $2 tenths of a second for PID $1 to be gone; false if it is not.
wait_gone() {
    local i
    for ((i = 0; i < $2; i++)); do
        alive "$1" || return 0
        sleep 0.1
    done
    ! alive "$1"
}
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

# ---- cleanup: whatever happens, leave no process and no temp file behind ----------

TMP=
SRV_PID=
CLIENT_PID=
SLEEP_PID=
MEDIA_PARTIAL=
KIDS=() # "pid:starttime" of every server child we have seen

# What a stopped server left behind: each recorded child still there (same
# pid and start time, so not a recycled pid) gets 3 s to go on its own (a
# go2rtc child is sent SIGTERM by the kernel when go2rtc dies), then is
# killed; a group leader takes its group with it. REAPED: how many had to be.
reap_kids() {
    local k pid st s f i left
    REAPED=0
    for ((i = 0; i < 30; i++)); do
        left=0
        for k in "${KIDS[@]}"; do
            s=$(proc_stat "${k%%:*}") || continue
            read -ra f <<<"$s"
            [[ ${f[19]} == "${k#*:}" && ${f[0]} != Z ]] && left=1
        done
        ((left)) || break
        sleep 0.1
    done
    for k in "${KIDS[@]}"; do
        pid=${k%%:*} st=${k#*:}
        s=$(proc_stat "$pid") || continue
        read -ra f <<<"$s"
        [[ ${f[19]} == "$st" && ${f[0]} != Z ]] || continue
        REAPED=$((REAPED + 1))
        if [[ ${f[2]} == "$pid" ]]; then
            note "producer pid $pid outlived the server; killing its process group"
            kill -KILL -- "-$pid" 2>/dev/null || true
        else
            note "child pid $pid outlived the server; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    KIDS=()
    return 0
}

stop_client() {
    if alive "$CLIENT_PID"; then
        kill -TERM "$CLIENT_PID" 2>/dev/null
        wait_gone "$CLIENT_PID" 50 || kill -KILL "$CLIENT_PID" 2>/dev/null
    fi
    wait "$CLIENT_PID" 2>/dev/null || true
    CLIENT_PID=
}

# SIGTERM is each server's graceful shutdown: it stops its producers.
# Returns 1 if anything had to be killed.
bench_server_stop() {
    local rc=0
    [[ -n $SRV_PID ]] || return 0
    if alive "$SRV_PID"; then
        KIDS+=($(descendants_of "$SRV_PID"))
        kill -TERM "$SRV_PID" 2>/dev/null
        if ! wait_gone "$SRV_PID" 100; then
            note "$SRV_LABEL did not exit within 10 s of SIGTERM; killing it"
            kill -KILL "$SRV_PID" 2>/dev/null
            rc=1
        fi
    fi
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
    reap_kids
    ((REAPED == 0)) || rc=1
    return $rc
}

PART_PID= # scripts/bench: the bench script it runs, which cleans up after itself
bench_cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    alive "$SLEEP_PID" && kill "$SLEEP_PID" 2>/dev/null
    if alive "$PART_PID"; then
        kill -TERM "$PART_PID" 2>/dev/null
        wait_gone "$PART_PID" 300 || kill -KILL "$PART_PID" 2>/dev/null
    fi
    stop_client
    bench_server_stop
    wait 2>/dev/null
    reap_kids
    [[ -n $MEDIA_PARTIAL ]] && rm -f "$MEDIA_PARTIAL"
    [[ -n $TMP ]] && rm -rf "$TMP"
    exit "$rc"
}

# A sleep that a signal can interrupt: bash runs a trap only once its
# foreground child is done, so a plain `sleep` would hold off a SIGTERM;
# `wait` returns at once.
bench_sleep() {
    sleep "$1" &
    SLEEP_PID=$!
    wait "$SLEEP_PID"
    SLEEP_PID=
}

bench_traps() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/${BENCH:-bench}.XXXXXX")
}

# ---- prerequisites -----------------------------------------------------------------

bench_prepare() {
    cd "$ROOT"
    if [[ -z $NO_BUILD ]]; then
        . scripts/lib/deps.sh
        ensure_cargo
        # cargo itself decides whether anything needs rebuilding.
        cargo build --release --locked --quiet
    fi
    [[ -x $BIN ]] || die "no streamvisor binary at $BIN"
    # Any ffmpeg on PATH will do; apt only when there is none.
    if ! command -v ffmpeg >/dev/null; then
        . scripts/lib/deps.sh
        ensure_apt ffmpeg
    fi
    FFMPEG=$(command -v ffmpeg)
    # The peers' commands are split on spaces (go2rtc, MediaMTX).
    [[ $FFMPEG != *[[:space:]\"\'\\\$]* ]] || die "the ffmpeg path must have no spaces or quotes: $FFMPEG"
    # Debian's python3 when present: a pyenv shim costs a fork+exec per call.
    PY=/usr/bin/python3
    if [[ ! -x $PY ]]; then
        if ! command -v python3 >/dev/null; then
            . scripts/lib/deps.sh
            ensure_apt python3
        fi
        PY=$(command -v python3)
    fi
    bench_media
    CLK_TCK=$(getconf CLK_TCK)
    NCPU=$(nproc)
}

# Test media, made once. testsrc2 has motion and fine detail, so x264 really
# spends the 1.9 Mbit/s; -g 50 is a keyframe every 2 s, as cameras do.
bench_media() {
    if [[ $CODEC == h265 ]]; then
        MEDIA=$MEDIA_H265
        # ffmpeg cannot write H.265 into go2rtc's FLV pipe.
        GO2RTC_SOURCE=rtsp
    fi
    if [[ $CODEC == h265 && ! -s $MEDIA ]]; then
        mkdir -p "$MEDIA_DIR"
        MEDIA_PARTIAL=$MEDIA_DIR/.partial.$$.mp4
        note "generating test media (once): $MEDIA"
        ffmpeg -hide_banner -loglevel error -nostdin -y \
            -f lavfi -i testsrc2=size=1280x720:rate=25 \
            -f lavfi -i sine=frequency=1000:sample_rate=48000 \
            -t 30 \
            -c:v libx265 -preset veryfast -pix_fmt yuv420p -tag:v hvc1 \
            -b:v 1900k -maxrate 2M -bufsize 4M \
            -x265-params "keyint=50:min-keyint=50:scenecut=0:log-level=error" \
            -c:a aac -b:a 96k \
            -movflags +faststart "$MEDIA_PARTIAL"
        mv "$MEDIA_PARTIAL" "$MEDIA"
        MEDIA_PARTIAL=
    fi
    if [[ ! -s $MEDIA ]]; then
        mkdir -p "$MEDIA_DIR"
        MEDIA_PARTIAL=$MEDIA_DIR/.partial.$$.mp4
        note "generating test media (once): $MEDIA"
        ffmpeg -hide_banner -loglevel error -nostdin -y \
            -f lavfi -i testsrc2=size=1280x720:rate=25 \
            -f lavfi -i sine=frequency=1000:sample_rate=48000 \
            -t 30 \
            -c:v libx264 -preset veryfast -pix_fmt yuv420p \
            -b:v 1900k -maxrate 2M -bufsize 4M -g 50 -keyint_min 50 -sc_threshold 0 \
            -c:a aac -b:a 96k \
            -movflags +faststart "$MEDIA_PARTIAL"
        mv "$MEDIA_PARTIAL" "$MEDIA"
        MEDIA_PARTIAL=
    fi
    # The peers' commands are split on spaces (go2rtc, MediaMTX).
    [[ $MEDIA != *[[:space:]\"\'\\\$]* ]] || die "the test media path must have no spaces or quotes: $MEDIA"
    MEDIA_KBPS=$(ffprobe -v error -show_entries format=bit_rate -of default=nw=1:nk=1 "$MEDIA")
    MEDIA_KBPS=$((MEDIA_KBPS / 1000))
}

# N sockets in the server and N more in the client (both inherit this).
bench_fd_limit() {
    local need=$(($1 + 256)) hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=1048576
    ((hard >= need)) || die "$1 readers need $need file descriptors; the hard limit is $hard"
    ulimit -n "$hard" 2>/dev/null || ulimit -n "$need"
}

# ---- the peer ----------------------------------------------------------------------

# Sets PEER_KIND (go2rtc|mediamtx), PEER_VERSION and PEER_LABEL from PEER
# (and --peer-kind). Without --peer: nothing, unless --print-config.
bench_peer_detect() {
    PEER_LABEL=
    if [[ -z $PEER ]]; then
        [[ -z $PEER_KIND || -n $PRINT_CONFIG ]] || die "--peer-kind without --peer"
        [[ -n $PEER_KIND ]] && PEER_LABEL=$PEER_KIND
        return 0
    fi
    [[ -f $PEER && -x $PEER ]] || die "--peer $PEER: not an executable file"
    PEER=$(cd "$(dirname "$PEER")" && pwd)/$(basename "$PEER")
    local out=
    # go2rtc prints "go2rtc version 1.9.9 (rev) linux/amd64"; MediaMTX "v1.9.3".
    out=$(cd "$TMP" && timeout 10 "$PEER" --version </dev/null 2>&1 | head -n 3) || true
    if [[ -z $PEER_KIND ]]; then
        case ${PEER##*/} in
        *go2rtc*) PEER_KIND=go2rtc ;;
        *mediamtx* | *rtsp-simple-server*) PEER_KIND=mediamtx ;;
        *)
            if [[ $out == *go2rtc* ]]; then
                PEER_KIND=go2rtc
            elif [[ $out =~ ^v?[0-9]+\.[0-9]+ ]]; then
                PEER_KIND=mediamtx
            else
                out=${out%%$'\n'*}
                die "cannot tell what $PEER is (--version said: ${out:-nothing}); say --peer-kind go2rtc|mediamtx"
            fi
            ;;
        esac
    fi
    case $PEER_KIND in
    go2rtc) [[ $out =~ version[[:space:]]+([^[:space:]]+) ]] && PEER_VERSION=${BASH_REMATCH[1]} ;;
    mediamtx) [[ $out =~ (v?[0-9]+\.[0-9]+[^[:space:]]*) ]] && PEER_VERSION=${BASH_REMATCH[1]} ;;
    *) die "--peer-kind must be go2rtc or mediamtx, not '$PEER_KIND'" ;;
    esac
    PEER_LABEL="$PEER_KIND${PEER_VERSION:+ ${PEER_VERSION#v}}"
}

# bench_supports KIND PROTO: can KIND serve PROTO? MediaMTX has no HTTP-FLV.
bench_supports() {
    [[ $1 == mediamtx && $2 == flv ]] && return 1
    return 0
}

# ---- configs -----------------------------------------------------------------------

# The producer each server runs is the same ffmpeg reading the same file at
# its own pace, looped, without re-encoding, as streamvisor runs a file
# source (src/source.rs):
FFMPEG_IN="-hide_banner -nostdin -loglevel error -re -stream_loop -1 -i"
FFMPEG_FLV_OUT="-c copy -flush_packets 1 -f flv -flvflags no_duration_filesize pipe:1"

# bench_write_config KIND DIR API_PORT RTSP_PORT: writes KIND's config into
# DIR; sets SRV_CMD (argv) and SRV_ENV (VAR=value words for env).
bench_write_config() {
    local kind=$1 dir=$2 api=$3 rtsp=$4
    SRV_ENV=()
    case $kind in
    streamvisor)
        # linger 0s: the producer stops as soon as the last viewer leaves.
        # RTMP and WebRTC off: their default ports may be taken.
        # --ingest rtsp: the file as the same ffmpeg publishing back over
        # RTSP, which is what the hub runs for a source FLV cannot hold.
        local src=$MEDIA
        [[ $INGEST == rtsp ]] && src="exec:$FFMPEG $FFMPEG_IN $MEDIA -c copy -rtsp_transport tcp -f rtsp {output}"
        cat >"$dir/streamvisor.yaml" <<EOF
api: { listen: "127.0.0.1:$api" }
rtsp: { listen: "127.0.0.1:$rtsp" }
rtmp: { listen: "" }
webrtc: { listen: "" }
ffmpeg: { bin: "$FFMPEG" }
log: { level: warn }
supervisor: { linger: 0s }
streams:
  $STREAM: "$src"
EOF
        SRV_CONFIG=$dir/streamvisor.yaml
        SRV_CMD=("$BIN" -c "$SRV_CONFIG")
        ;;
    go2rtc)
        # go2rtc stops a producer when its last consumer leaves (no linger
        # setting). Its exec: source reads FLV from a pipe (pkg/magic), so
        # `flv` runs exactly our ffmpeg command; `rtsp` is go2rtc's usual
        # form, ffmpeg publishing to go2rtc's own RTSP server ({output}).
        local src
        if [[ $GO2RTC_SOURCE == rtsp ]]; then
            src="exec:$FFMPEG $FFMPEG_IN $MEDIA -c copy -rtsp_transport tcp -f rtsp {output}"
        else
            src="exec:$FFMPEG $FFMPEG_IN $MEDIA $FFMPEG_FLV_OUT"
        fi
        # Every listener on a free loopback port or off: webrtc "" is no
        # fixed port, srtp "" (HomeKit) off, rtmp "" off; no STUN servers.
        cat >"$dir/go2rtc.yaml" <<EOF
api:
  listen: "127.0.0.1:$api"
rtsp:
  listen: "127.0.0.1:$rtsp"
rtmp:
  listen: ""
webrtc:
  listen: ""
  ice_servers: []
srtp:
  listen: ""
ffmpeg:
  bin: "$FFMPEG"
log:
  level: warn
streams:
  $STREAM: "$src"
EOF
        SRV_CONFIG=$dir/go2rtc.yaml
        SRV_CMD=("$PEER" -c "$SRV_CONFIG")
        ;;
    mediamtx)
        # MediaMTX refuses unknown keys, and its keys were renamed over the
        # years (rtmpDisable -> rtmp, protocols -> rtspTransports ...), so
        # the file holds only keys every v1 (and late v0) has; the rest go
        # in MTX_* variables, which a version that lacks the key ignores:
        # both spellings are given. RTSP over TCP only (no UDP ports), every
        # other listener off. The on-demand ffmpeg publishes the looped file
        # to MediaMTX over RTSP (it cannot take FLV from a pipe), and is
        # stopped (SIGINT to its group) runOnDemandCloseAfter after the last
        # reader: 0s, as our linger.
        cat >"$dir/mediamtx.yml" <<EOF
logLevel: warn
rtspAddress: 127.0.0.1:$rtsp
paths:
  $STREAM:
    runOnDemand: "$FFMPEG $FFMPEG_IN $MEDIA -c copy -rtsp_transport tcp -f rtsp rtsp://127.0.0.1:$rtsp/$STREAM"
    runOnDemandRestart: true
    runOnDemandStartTimeout: 10s
    runOnDemandCloseAfter: 0s
EOF
        SRV_CONFIG=$dir/mediamtx.yml
        SRV_ENV=(
            MTX_RTSPTRANSPORTS=tcp MTX_PROTOCOLS=tcp
            MTX_RTMP=no MTX_RTMPDISABLE=yes
            MTX_HLS=no MTX_HLSDISABLE=yes
            MTX_WEBRTC=no MTX_WEBRTCDISABLE=yes
            MTX_SRT=no MTX_MOQ=no
            MTX_API=no MTX_METRICS=no MTX_PPROF=no MTX_PLAYBACK=no
        )
        SRV_CMD=("$PEER" "$SRV_CONFIG")
        ;;
    *) die "unknown server kind $kind" ;;
    esac
}

# --print-config: what would run, for each server, with placeholder ports.
bench_print_configs() {
    local kind dir
    for kind in streamvisor ${PEER_KIND:-}; do
        dir=$TMP/print-$kind
        mkdir -p "$dir"
        [[ $kind == streamvisor || -n $PEER ]] || PEER=/path/to/$kind
        bench_write_config "$kind" "$dir" 11984 18554
        echo "==== $kind: ${SRV_CONFIG##*/}"
        cat "$SRV_CONFIG"
        echo "==== $kind: command"
        echo "${SRV_ENV[*]+${SRV_ENV[*]} }${SRV_CMD[*]}"
        echo
    done
}

# ---- running a server --------------------------------------------------------------

# bench_server_start ROLE: ROLE is ours (streamvisor) or peer. Free ports,
# never the defaults: this run must not collide with a server already
# running here. Sets SRV_PID, SRV_KIND, SRV_LABEL, SRV_ROLE, SRV_API_PORT
# (0: no HTTP), SRV_RTSP_PORT, SRV_LOG.
bench_server_start() {
    SRV_ROLE=$1
    if [[ $SRV_ROLE == ours ]]; then
        SRV_KIND=streamvisor
        SRV_LABEL=streamvisor
    else
        SRV_KIND=$PEER_KIND
        SRV_LABEL=$PEER_LABEL
    fi
    local dir=$TMP/$SRV_KIND
    mkdir -p "$dir"
    SRV_API_PORT=$("$PY" "$CLIENT" free-port)
    SRV_RTSP_PORT=$("$PY" "$CLIENT" free-port)
    while [[ $SRV_RTSP_PORT == "$SRV_API_PORT" ]]; do SRV_RTSP_PORT=$("$PY" "$CLIENT" free-port); done
    bench_write_config "$SRV_KIND" "$dir" "$SRV_API_PORT" "$SRV_RTSP_PORT"
    [[ $SRV_KIND == mediamtx ]] && SRV_API_PORT=0
    SRV_LOG=$dir/server.log
    # exec: $! is the server itself, not a shell around it. In its own
    # directory: nothing a peer might write lands in the repo.
    (cd "$dir" && exec env ${SRV_ENV[@]+"${SRV_ENV[@]}"} "${SRV_CMD[@]}") >"$SRV_LOG" 2>&1 </dev/null &
    SRV_PID=$!
    if ! "$PY" "$CLIENT" wait-ready --http-port "$SRV_API_PORT" --tcp-port "$SRV_RTSP_PORT" \
        --pid "$SRV_PID" --timeout 20 || ! alive "$SRV_PID"; then
        tail -n 30 "$SRV_LOG" >&2
        die "$SRV_LABEL did not come up"
    fi
}

# The server's log lines at warn or above (each server words them its own way).
bench_server_problems() {
    grep -Eiw 'warn|warning|error|err|wrn|war|fatal|ftl|panic' "$SRV_LOG" || true
}

# ---- results -----------------------------------------------------------------------

RESULTS_OWN=
bench_results_init() {
    if [[ -z $RESULTS ]]; then
        RESULTS=$TMP/results.tsv
        RESULTS_OWN=1
    fi
    touch "$RESULTS"
    [[ -z $PEER_ONLY || -n $PEER ]] || die "--peer-only without --peer"
    if [[ -n $PEER ]] && ! grep -q "^#label	$PEER_KIND	" "$RESULTS"; then
        printf '#label\t%s\t%s\n' "$PEER_KIND" "$PEER_LABEL" >>"$RESULTS"
    fi
}
# bench_ours: whether this run measures streamvisor (not with --peer-only).
bench_ours() { [[ -z $PEER_ONLY ]]; }
# bench_result SECTION METRIC ROLE VALUE. ROLE ours or peer; a peer's row
# is filed under its kind (go2rtc, mediamtx), so that one results file can
# hold both peers (scripts/bench --peer A --peer B).
bench_result() {
    local role=$3
    [[ $role == peer ]] && role=$PEER_KIND
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$role" "$4" >>"$RESULTS"
}
# This script's own rows, as a table.
bench_table() {
    local tsv=$TMP/table.tsv
    grep '^#label' "$RESULTS" >"$tsv" || true
    cat "$@" >>"$tsv"
    "$PY" "$CLIENT" table "$tsv"
}

# ---- the machine -------------------------------------------------------------------

# One line per fact, for the README's figures.
bench_machine() {
    local model mem os
    model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-}")
    echo "cpus: $(nproc) x ${model:-unknown} ($(uname -m))"
    echo "memory: $mem"
    echo "kernel: $(uname -sr)${os:+, $os}"
    echo "ffmpeg: $(ffmpeg -hide_banner -version 2>/dev/null | head -n 1 | awk '{ print $3 }')"
    echo "python: $("$PY" -c 'import platform; print(platform.python_version())')"
    local rev=
    # Read-only git: which commit the binary was built from, if we can tell.
    if [[ $BIN == "$ROOT/target/release/streamvisor" ]] && rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
        git -C "$ROOT" diff-index --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null ||
            rev="$rev + uncommitted changes to src/ or Cargo.*"
        if [[ -z $NO_BUILD ]]; then
            rev=" (built from git $rev)"
        else
            rev=" (tree at git $rev; --no-build: the binary may be older)"
        fi
    fi
    echo "streamvisor: $("$BIN" --version 2>/dev/null | head -n 1)$rev"
    [[ -n $PEER ]] && echo "peer: $PEER_LABEL ($PEER)"
    return 0
}

# ---- latency (issue 17, point 0): a stream fed by the bench's own publisher ------

# bench_publish_only: from here on, bench_write_config (so bench_server_start
# and bench_print_configs) writes each server's usual config, but its stream
# has no source: it takes an RTSP publisher at
# rtsp://127.0.0.1:RTSP_PORT/$STREAM instead (streamvisor: a publish-only
# stream; go2rtc: a stream with no source; MediaMTX: a path whose source is
# `publisher`, its default). Used where the bench must write the frames
# itself (scripts/bench-latency), so every server gets the same one hop.
bench_publish_only() {
    eval "bench_write_config_with_source() $(declare -f bench_write_config | tail -n +2)"
    bench_write_config() {
        bench_write_config_with_source "$@"
        # The stream is the last entry of every config: cut from its line on.
        sed -i "/^  $STREAM:/,\$d" "$SRV_CONFIG"
        case $1 in
        mediamtx) echo "  $STREAM: {}" >>"$SRV_CONFIG" ;;
        *) echo "  $STREAM:" >>"$SRV_CONFIG" ;;
        esac
        ! grep -qF -- "$MEDIA" "$SRV_CONFIG" || die "bench_publish_only: $1's config still has a source"
    }
}

# ---- hls (issue 17 point 2: scripts/bench-hls) --------------------------------------

# bench_env_set VAR=value...: after bench_write_config, sets each VAR in
# SRV_ENV, replacing what the base config gave it. For a bench that needs
# a listener the base config turns off (MediaMTX's HLS: MTX_HLS=yes).
bench_env_set() {
    local kv e env=()
    for e in ${SRV_ENV[@]+"${SRV_ENV[@]}"}; do
        for kv in "$@"; do [[ ${e%%=*} == "${kv%%=*}" ]] && continue 2; done
        env+=("$e")
    done
    SRV_ENV=(${env[@]+"${env[@]}"} "$@")
}
