#!/bin/sh
# The add-on's entry point: writes its options (/data/options.json) as a
# streams.yaml and runs streamvisor on it. Stream edits made through the API
# are saved to that file and last until the add-on restarts, when the
# options are written again. A /config/streams.yaml of your own (any of the
# config README.md describes) is used instead, and the API saves to it.
# Arguments go to streamvisor (tests/packaging.rs passes `check`).
set -eu
OPTIONS=${OPTIONS:-/data/options.json}
OWN=${OWN_CONFIG:-/config/streams.yaml}
OUT=${OUT:-/data/streams.yaml}
BIN=${STREAMVISOR:-/usr/bin/streamvisor}

if [ -f "$OWN" ]; then
    echo "streamvisor add-on: using $OWN; the streams option is ignored" >&2
    exec "$BIN" -c "$OWN" "$@"
fi

# JSON strings are YAML scalars: jq's tojson quotes names and sources.
{
    echo "# Written from the add-on's options at every start: change the options, not this file."
    echo 'api: { listen: ":1984" }'
    echo 'rtsp: { listen: ":8554" }'
    echo 'webrtc: { listen: ":8555" }'
    jq -r '"log: { level: \(.log_level // "info" | tojson) }"' "$OPTIONS"
    echo "streams:"
    jq -r '(.streams // []) | group_by(.name)[]
        | "  \(.[0].name | tojson): \(map(.source // empty) | if length == 0 then "" else tojson end)"' "$OPTIONS"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
exec "$BIN" -c "$OUT" "$@"
