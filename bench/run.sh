#!/usr/bin/env bash
# The entrance benchmark: one command, not part of `cargo test`. See README.md ("Benchmarks")
# and docs/BENCHMARKS.md. Everything listens on and is sent to 127.0.0.1 only.
#
#   bench/run.sh                      # all phases, stores: memory sqlite redis
#   BENCH_STORES="memory" bench/run.sh
#
# Knobs (environment): BENCH_STORES, BENCH_DURATION (s, /auth runs, default 10),
# BENCH_CONNECTIONS (64), BENCH_THREADS (wrk threads, 2), BENCH_LOGIN_CONCURRENCY (16),
# BENCH_LOGIN_SECS (10), BENCH_SESSIONS (100000), BENCH_ROUNDS (3 baseline + /auth pairs;
# medians reported).
#
# Per store: start entrance (`serve`, demo-shaped config) against the mock IdP, sign in once,
# capture /auth's 200 response, start the bare axum baseline with the same headers and load
# it, then load /auth with the session cookie, then run complete logins at concurrency 16.
# A store entrance does not accept (unknown to this build) or whose server is missing is
# skipped with a message. Results: a table on stdout and in bench/results/latest.md.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
STORES=${BENCH_STORES:-"memory sqlite redis"}
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
LOGIN_CONC=${BENCH_LOGIN_CONCURRENCY:-16}
LOGIN_SECS=${BENCH_LOGIN_SECS:-10}
SESSIONS=${BENCH_SESSIONS:-100000}
ROUNDS=${BENCH_ROUNDS:-3}
RESULTS=$ROOT/bench/results
BIN=$ROOT/target/release
EXAMPLES=$BIN/examples
mkdir -p "$RESULTS"
WORK=$(mktemp -d /tmp/entrance-bench.XXXXXX)

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '\n== %s\n' "$*" >&2; }

# Stops one process this script started.
stop() {
    local pid=$1 keep=() p
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# A free loopback port (nothing answers on it).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

# wait_status URL STATUS PID: polls until URL answers STATUS; fails if PID exits or after 30 s.
wait_status() {
    local url=$1 want=$2 pid=$3 i code
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 1
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        [[ $code == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# wrk's latency ("310.00us", "1.20ms", "1.01s") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else print "?" }'
}

# load URL COOKIE NAME → sets RPS P50 P99 (ms); keeps wrk's output in $WORK/NAME.wrk.
load() {
    local url=$1 cookie=$2 name=$3 out=$WORK/$3.wrk
    # Short warm-up, then the measured run with the same settings.
    wrk -t"$THREADS" -c"$CONNS" -d2s -H "Cookie: $cookie" "$url" >/dev/null
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -H "Cookie: $cookie" "$url" >"$out"
    cp "$out" "$RESULTS/$name.wrk.txt"
    if grep -q 'Non-2xx or 3xx responses' "$out" || grep -q 'Socket errors' "$out"; then
        echo "bench: $name: wrk saw errors or non-2xx answers:" >&2
        cat "$out" >&2
        return 1
    fi
    RPS=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
    P50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    P99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
}

# --- tools and binaries -----------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    log "installing wrk (Debian package)"
    if [[ $(id -u) == 0 ]]; then
        apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    else
        sudo apt-get install -y -qq wrk >/dev/null
    fi
fi
command -v curl >/dev/null || { echo "bench: curl is needed" >&2; exit 1; }

log "building release binaries (entrance, mock-idp) and bench examples"
cargo build --release --workspace --bins --examples

CLK_TCK=$(getconf CLK_TCK)
export CLK_TCK

# --- the mock IdP (one for all stores) --------------------------------------------------------
TENANT=aaaabbbb-0000-cccc-1111-dddd2222eeee
CLIENT_ID=00001111-aaaa-2222-bbbb-3333cccc4444
CLIENT_SECRET='bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR'
IDP_PORT=$(free_port)
declare -A EPORT
redirects=()
for s in $STORES; do
    EPORT[$s]=$(free_port)
    redirects+=(--redirect-uri "http://127.0.0.1:${EPORT[$s]}/login/callback")
done
log "starting mock-idp on 127.0.0.1:$IDP_PORT"
RUST_LOG=warn "$BIN/mock-idp" --listen "127.0.0.1:$IDP_PORT" "${redirects[@]}" \
    >"$WORK/mock-idp.log" 2>&1 &
IDP_PID=$!
PIDS+=("$IDP_PID")
METADATA="http://127.0.0.1:$IDP_PORT/$TENANT/v2.0/.well-known/openid-configuration"
wait_status "$METADATA" 200 "$IDP_PID" || { cat "$WORK/mock-idp.log" >&2; exit 1; }

ROWS=()
ROUNDS_LOG=()
SKIPPED=()

run_store() {
    local store=$1 port=${EPORT[$1]} extra="" redis_pid=""
    local base="http://127.0.0.1:$port"
    log "store: $store"
    case $store in
        memory) ;;
        sqlite) extra="sqlite_path = \"$WORK/sessions.db\"" ;;
        redis)
            if ! command -v redis-server >/dev/null; then
                SKIPPED+=("redis: skipped: redis-server is not installed (apt-get install redis-server)")
                echo "${SKIPPED[-1]}" >&2
                return 0
            fi
            local rport
            rport=$(free_port)
            redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no \
                >"$WORK/redis.log" 2>&1 &
            redis_pid=$!
            PIDS+=("$redis_pid")
            for _ in $(seq 1 100); do
                redis-cli -p "$rport" ping 2>/dev/null | grep -q PONG && break
                sleep 0.1
            done
            extra="redis_url = \"redis://127.0.0.1:$rport\""
            ;;
        *) extra="" ;;
    esac
    cat >"$WORK/entrance-$store.toml" <<TOML
# Like config/entrance.toml (the demo), served by \`entrance serve\` against a separate mock-idp.
listen = "127.0.0.1:$port"
public_url = "$base"

[session]
store = "$store"
$extra

[rate_limit]
# Every benchmark login comes from 127.0.0.1; the per-IP login limit would stop them.
per_ip_per_minute = 0

[[connections]]
id = "demo"
name = "Contoso (mock Entra)"
metadata_url = "$METADATA"
client_id = "$CLIENT_ID"
client_secret = "$CLIENT_SECRET"
TOML
    "$BIN/entrance" serve --config "$WORK/entrance-$store.toml" >"$WORK/entrance-$store.log" 2>&1 &
    local epid=$!
    PIDS+=("$epid")
    if ! wait_status "$base/login" 303 "$epid"; then
        local why
        why=$(grep -m1 -i 'entrance:' "$WORK/entrance-$store.log" || tail -n1 "$WORK/entrance-$store.log")
        why=${why%% in /tmp/*}
        SKIPPED+=("$store: skipped: entrance did not start with session.store = \"$store\": $why")
        echo "${SKIPPED[-1]}" >&2
        stop "$epid"
        [[ -n $redis_pid ]] && stop "$redis_pid"
        return 0
    fi
    sleep 0.5
    local rss_idle
    rss_idle=$(rss_kib "$epid")

    local cookie
    cookie=$("$EXAMPLES/bench_logins" cookie "$base")
    curl -s -D "$WORK/auth.headers" -o /dev/null -H "Cookie: $cookie" "$base/auth"
    head -n1 "$WORK/auth.headers" | grep -q ' 200' || {
        echo "bench: /auth did not answer 200 with the session cookie" >&2
        cat "$WORK/auth.headers" >&2
        exit 1
    }
    cp "$WORK/auth.headers" "$RESULTS/auth-response-headers.txt"

    # Baseline, just before this store's run.
    local bport bpid
    bport=$(free_port)
    "$EXAMPLES/bench_baseline" "127.0.0.1:$bport" "$WORK/auth.headers" >"$WORK/baseline.log" 2>&1 &
    bpid=$!
    PIDS+=("$bpid")
    wait_status "http://127.0.0.1:$bport/auth" 200 "$bpid" || { cat "$WORK/baseline.log" >&2; exit 1; }
    local esize bsize ecount bcount
    esize=$(curl -s -D - -o /dev/null -H "Cookie: $cookie" "$base/auth" | wc -c)
    bsize=$(curl -s -D - -o /dev/null -H "Cookie: $cookie" "http://127.0.0.1:$bport/auth" | wc -c)
    ecount=$(curl -s -D - -o /dev/null -H "Cookie: $cookie" "$base/auth" | grep -c ':')
    bcount=$(curl -s -D - -o /dev/null -H "Cookie: $cookie" "http://127.0.0.1:$bport/auth" | grep -c ':')
    echo "response head: entrance $esize bytes / $ecount headers, baseline $bsize bytes / $bcount headers" >&2
    # Rounds of (baseline, then /auth) back to back; the medians are reported, every round is
    # kept in bench/results/. The machine is shared: one 10 s pair alone can swing ±25 %.
    local r b_all=() a_all=() ratios=() bp50s=() bp99s=() ap50s=() ap99s=()
    for r in $(seq 1 "$ROUNDS"); do
        log "round $r/$ROUNDS: baseline (bare axum), then /auth ($store store): wrk -t$THREADS -c$CONNS -d${DURATION}s"
        load "http://127.0.0.1:$bport/auth" "$cookie" "baseline-$store-$r"
        b_all+=("$RPS"); bp50s+=("$P50"); bp99s+=("$P99")
        echo "baseline: $RPS req/s, p50 $P50 ms, p99 $P99 ms" >&2
        load "$base/auth" "$cookie" "auth-$store-$r"
        a_all+=("$RPS"); ap50s+=("$P50"); ap99s+=("$P99")
        ratios+=("$(awk -v a="$RPS" -v b="${b_all[-1]}" 'BEGIN { printf "%.0f", 100 * a / b }')")
        echo "/auth: $RPS req/s (${ratios[-1]} % of baseline), p50 $P50 ms, p99 $P99 ms" >&2
        ROUNDS_LOG+=("| $store | $r | ${b_all[-1]} | ${bp50s[-1]} / ${bp99s[-1]} | $RPS | ${ratios[-1]} % | $P50 / $P99 |")
    done
    stop "$bpid"
    local b_rps b_p50 b_p99 a_rps a_p50 a_p99 ratio
    b_rps=$(median "${b_all[@]}"); b_p50=$(median "${bp50s[@]}"); b_p99=$(median "${bp99s[@]}")
    a_rps=$(median "${a_all[@]}"); a_p50=$(median "${ap50s[@]}"); a_p99=$(median "${ap99s[@]}")
    ratio=$(median "${ratios[@]}")

    log "logins ($store store): concurrency $LOGIN_CONC for ${LOGIN_SECS}s"
    "$EXAMPLES/bench_logins" run "$base" "$LOGIN_CONC" "$LOGIN_SECS" "$epid" "$IDP_PID" \
        | tee "$WORK/logins-$store.txt" >&2
    local lps ecpu icpu
    lps=$(awk -F= '$1 == "logins_per_s" {print $2}' "$WORK/logins-$store.txt")
    ecpu=$(awk -F= '$1 == "entrance_cpu_ms_per_login" {print $2}' "$WORK/logins-$store.txt")
    icpu=$(awk -F= '$1 == "idp_cpu_ms_per_login" {print $2}' "$WORK/logins-$store.txt")
    sleep 0.5
    local rss_after
    rss_after=$(rss_kib "$epid")
    stop "$epid"
    [[ -n $redis_pid ]] && stop "$redis_pid"

    ROWS+=("| $store | $b_rps | $b_p50 / $b_p99 | $a_rps | **$ratio %** | $a_p50 | $a_p99 | $lps | $ecpu | $icpu | $(mib "$rss_idle") | $(mib "$rss_after") |")
    RATIO[$store]=$ratio
    AP99[$store]=$a_p99
    ECPU[$store]=$ecpu
}

declare -A RATIO AP99 ECPU
for s in $STORES; do
    run_store "$s"
done
stop "$IDP_PID"

log "memory per session: $SESSIONS copies of a demo login's record (in-process memory store)"
"$EXAMPLES/bench_sessions" "$SESSIONS" | tee "$WORK/sessions.txt" >&2
kv() { awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2) }' "$WORK/sessions.txt"; }
PER_SESSION=$(kv bytes_per_session)

# --- report -----------------------------------------------------------------------------------
target() { # target NAME OK
    if [[ $2 == 1 ]]; then echo "- [x] $1"; else echo "- [ ] **missed:** $1"; fi
}
ok() { awk "BEGIN { exit !($1) }" && echo 1 || echo 0; }
{
    echo "# entrance benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'),"
    echo "$(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r), $(rustc --version)."
    echo "Command: \`bench/run.sh\` (wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, $ROUNDS rounds of baseline then /auth, medians;"
    echo "logins at concurrency $LOGIN_CONC for ${LOGIN_SECS}s)."
    echo
    echo "| store | baseline req/s | baseline p50 / p99 ms | /auth req/s | /auth ÷ baseline | /auth p50 ms | /auth p99 ms | logins/s | entrance CPU ms/login | mock IdP CPU ms/login | entrance RSS idle MiB | entrance RSS after runs MiB |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for r in "${ROWS[@]}"; do echo "$r"; done
    echo
    for s in "${SKIPPED[@]}"; do echo "- $s"; done
    echo
    echo "Every round (baseline just before /auth):"
    echo
    echo "| store | round | baseline req/s | baseline p50 / p99 ms | /auth req/s | ÷ baseline | /auth p50 / p99 ms |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for r in "${ROUNDS_LOG[@]}"; do echo "$r"; done
    echo
    echo "Memory store with $SESSIONS sessions (each the record one demo login writes; the mock's"
    echo "default user, Ada Lovelace, claim set: \`$(kv claim_set)\`; ID token $(kv id_token_bytes) bytes,"
    echo "record $(kv record_json_bytes) bytes as JSON): RSS $(mib "$(kv rss_before_kib)") MiB → $(mib "$(kv rss_after_kib)") MiB,"
    echo "**$PER_SESSION bytes per session**."
    echo
    echo "Targets:"
    for s in $STORES; do
        [[ -v RATIO[$s] ]] || continue
        case $s in memory) want=60 ;; sqlite) want=35 ;; redis) want=30 ;; *) want=0 ;; esac
        target "/auth with the $s store ≥ $want % of baseline throughput (${RATIO[$s]} %)" "$(ok "${RATIO[$s]} >= $want")"
        target "/auth p99 with the $s store < 5 ms at $CONNS connections (${AP99[$s]} ms)" "$(ok "${AP99[$s]} < 5")"
        target "entrance CPU per login with the $s store < 1 ms (${ECPU[$s]} ms)" "$(ok "${ECPU[$s]} < 1")"
    done
    target "memory per stored session < 4096 bytes ($PER_SESSION)" "$(ok "$PER_SESSION < 4096")"
} >"$RESULTS/latest.md"
echo
cat "$RESULTS/latest.md"
