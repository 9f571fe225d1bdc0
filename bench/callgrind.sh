#!/usr/bin/env bash
# Instructions per `GET /auth` (memory store), counted by callgrind: deterministic whatever
# else the machine does, so it compares two builds where bench/run.sh's CPU figures cannot.
# See docs/BENCHMARKS.md ("Instructions per /auth").
#
#   bench/callgrind.sh [ENTRANCE_BINARY]    # default: target/release/entrance
#
# Needs valgrind and wrk (Debian packages), and `cargo build --release --workspace --bins
# --examples` first. Starts the mock IdP on 127.0.0.1:9191 and entrance (`serve`, the
# benchmark's demo-shaped config) on 127.0.0.1:3000 under callgrind with instrumentation off,
# signs in once, warms up with 3 s of wrk, then counts the instructions of a 10 s
# `wrk -t1 -c4` run on /auth with the session cookie and divides them by the requests wrk
# completed. Everything listens on loopback; both processes are stopped at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
ENTRANCE=${1:-$BIN/entrance}
WORK=$(mktemp -d /tmp/entrance-callgrind.XXXXXX)
VP="" MP=""
trap 'kill $VP $MP 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
for tool in valgrind callgrind_control callgrind_annotate wrk curl; do
    command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is missing (apt-get install valgrind wrk curl)" >&2; exit 1; }
done

cat >"$WORK/entrance.toml" <<'TOML'
listen = "127.0.0.1:3000"
public_url = "http://127.0.0.1:3000"
[session]
store = "memory"
[rate_limit]
per_ip_per_minute = 0
[[connections]]
id = "demo"
name = "Contoso (mock Entra)"
metadata_url = "http://127.0.0.1:9191/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0/.well-known/openid-configuration"
client_id = "00001111-aaaa-2222-bbbb-3333cccc4444"
client_secret = "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR"
TOML

RUST_LOG=warn "$BIN/mock-idp" --listen 127.0.0.1:9191 \
    --redirect-uri http://127.0.0.1:3000/login/callback >"$WORK/mock-idp.log" 2>&1 &
MP=$!
sleep 0.5
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/auth.cg" \
    "$ENTRANCE" serve --config "$WORK/entrance.toml" >"$WORK/entrance.log" 2>&1 &
VP=$!
for _ in $(seq 1 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3000/login) == 303 ]] && break
    sleep 0.2
done
COOKIE=$("$BIN/examples/bench_logins" cookie http://127.0.0.1:3000) || { cat "$WORK/entrance.log" >&2; exit 1; }
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" http://127.0.0.1:3000/auth) == 200 ]] ||
    { echo "callgrind.sh: /auth did not answer 200 with the session cookie" >&2; exit 1; }
wrk -t1 -c4 -d3s -H "Cookie: $COOKIE" http://127.0.0.1:3000/auth >/dev/null
callgrind_control -i on "$VP" >/dev/null
wrk -t1 -c4 -d10s -H "Cookie: $COOKIE" http://127.0.0.1:3000/auth >"$WORK/wrk.txt"
callgrind_control -i off "$VP" >/dev/null
callgrind_control -d "$VP" >/dev/null
N=$(grep -oP '^\s*\K[0-9]+(?= requests in)' "$WORK/wrk.txt")
T=$(callgrind_annotate "$WORK/auth.cg.1" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | grep -oP '^[0-9,]+' | tr -d ,)
echo "$ENTRANCE: $N requests, $T instructions, $((T / N)) instructions per /auth"
if [[ -n ${CALLGRIND_KEEP:-} ]]; then
    cp "$WORK/auth.cg.1" "$CALLGRIND_KEEP" && echo "profile: $CALLGRIND_KEEP (callgrind_annotate)"
fi
