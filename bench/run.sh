#!/usr/bin/env bash
# Turnpike's benchmark suite: one command, loopback only, bounded in time.
#
#   bash bench/run.sh                 # full run (~10 min), writes bench/results.md
#   bash bench/run.sh --smoke         # seconds per scenario, checks the harness (CI)
#   bash bench/run.sh --baseline F    # also show a previous results.json as "before"
#   bash bench/run.sh --out F         # write the table to F (default bench/results.md,
#                                     # or target/bench/smoke.md with --smoke)
#
# Scenarios, all against the same small upstream (turnpike-bench upstream), measured with wrk:
#   a. the upstream directly          b. nginx proxying it (keep-alive to the upstream)
#   c. Turnpike on a free route       d. Turnpike with a valid time-pass token
#   d'. the same time pass on a gateway with credential_memo = 0 (parse + HMAC every call)
#   (a-d' in interleaved rounds, the median round reported)
#   e. Turnpike with a different pre-paid single-call token per request, SQLite then PostgreSQL
#      (then checked: no call served twice)
#   f. Turnpike answering 402 challenges with the dev backend
#   g. SSE: delay per event directly, through nginx and through Turnpike
#   h. the agent's wallet: what the ledger and budget add to a paid fetch (dev backend), paid
#      fetches and ledger reservations per second with 100 concurrent fetchers
# plus start-up time, resident memory (idle, 1,000 connections) and, in full mode, the
# criterion micro-benchmarks (`cargo bench`). Needs wrk and nginx (installed from Debian's
# packages when missing and run as root) and, for e on PostgreSQL, a server on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
out=""
baseline=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) mode=smoke ;;
        --out) out="$2"; shift ;;
        --baseline) baseline="$2"; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$mode" = smoke ]; then
    duration=1; warmup=0; tokens_sqlite=20000; tokens_pg=20000; grow_rows=10000; startup_runs=1
    wallet_fetches=20; wallet_secs=1
    rounds=1; round_duration=1
    profile=debug; out="${out:-target/bench/smoke.md}"
else
    duration="${BENCH_DURATION:-10}"; warmup=2; tokens_sqlite=400000; tokens_pg=400000; grow_rows=1000000; startup_runs=7
    wallet_fetches=300; wallet_secs=5
    rounds="${BENCH_ROUNDS:-5}"; round_duration="${BENCH_ROUND_DURATION:-4}"
    profile=release; out="${out:-bench/results.md}"
fi
connections="${BENCH_CONNECTIONS:-64}"
wrk_threads="${BENCH_WRK_THREADS:-1}"
pg_admin="${TURNPIKE_BENCH_POSTGRES_ADMIN:-postgres://postgres@127.0.0.1:5432/test}"
pg_db=turnpike_bench

# Tools: wrk and nginx from Debian.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing ${missing[*]} from Debian's packages"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
    else
        echo "bench: missing ${missing[*]}: install them (Debian: apt-get install wrk nginx-light)" >&2
        exit 1
    fi
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

echo "==> building ($profile)"
if [ "$profile" = release ]; then
    cargo build --release --quiet -p turnpike -p turnpike-bench
    bin=target/release
else
    cargo build --quiet -p turnpike -p turnpike-bench
    bin=target/debug
fi
tp="${BENCH_TURNPIKE:-$PWD/$bin/turnpike}"   # BENCH_TURNPIKE: measure another build
tb="$PWD/$bin/turnpike-bench"

run="$PWD/target/bench/run"
results="$run/results"
rm -rf "$run"
mkdir -p "$results" "$run/nginx-tmp" "$run/data-sqlite" "$run/data-sqlite-full" "$run/data-pg" "$run/wallet"
chmod 777 "$run/nginx-tmp"

failed=0
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -f "$run/nginx.pid" ]; then kill "$(cat "$run/nginx.pid" 2>/dev/null)" 2>/dev/null || true; fi
    wait 2>/dev/null || true
}
trap cleanup EXIT

wait_http() { # URL: until it answers at all, 10 s at most
    for _ in $(seq 1 200); do
        if curl -s -o /dev/null "$1"; then return 0; fi
        sleep 0.05
    done
    echo "bench: nothing answers at $1" >&2
    exit 1
}

upstream_port=18000; nginx_port=18001; tp_port=18002; tp_full_port=18003
up="http://127.0.0.1:$upstream_port"

echo "==> upstream, nginx"
"$tb" upstream --listen "127.0.0.1:$upstream_port" --threads 1 2>"$run/upstream.log" &
pids+=($!)
wait_http "$up/_bench/count"

cat >"$run/nginx.conf" <<EOF
worker_processes auto;
pid $run/nginx.pid;
error_log $run/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $run/nginx-tmp/body;
    proxy_temp_path $run/nginx-tmp/proxy;
    fastcgi_temp_path $run/nginx-tmp/fastcgi;
    uwsgi_temp_path $run/nginx-tmp/uwsgi;
    scgi_temp_path $run/nginx-tmp/scgi;
    upstream api { server 127.0.0.1:$upstream_port; keepalive 256; }
    server {
        listen 127.0.0.1:$nginx_port backlog=4096;
        location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
        location ~ /sse\$ {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
"$nginx_bin" -c "$run/nginx.conf" -p "$run" 2>"$run/nginx-start.log" &
pids+=($!)
wait_http "http://127.0.0.1:$nginx_port/x"

master_key="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export TURNPIKE_BENCH_MASTER_KEY="$master_key"

gateway_config() { # FILE DATA_DIR STORE_URL [PORT [CREDENTIAL_MEMO]]
    cat >"$1" <<EOF
# Turnpike under benchmark: dev backend, no rate limits (the load comes from one address).
listen = "127.0.0.1:${4:-$tp_port}"
# Several gateways may run at once (replicas): each takes a free port for its admin listener.
admin.listen = "127.0.0.1:0"
data_dir = "$2"
master_key = { env = "TURNPIKE_BENCH_MASTER_KEY" }
credential_memo = ${5:-4096}

[rate_limits.challenges_per_ip]
requests = 0
per_secs = 60
burst = 0

[store]
url = "$3"

[backend]
kind = "dev"
# Scenario f issues a few hundred thousand invoices, none paid.
max_unpaid = 1000000

[[services]]
name = "free"
path = "/free"
upstream = "$up"
price_sats = 0

[[services]]
name = "pass"
path = "/pass"
upstream = "$up"
price_sats = 100
time_pass_secs = 86400

[[services]]
name = "call"
path = "/call"
upstream = "$up"
price_sats = 1
calls_per_payment = 1
EOF
}

start_gateway() { # CONFIG [PORT]
    RUST_LOG=warn "$tp" serve --config "$1" 2>>"$run/turnpike.log" &
    gateway_pid=$!
    pids+=("$gateway_pid")
    wait_http "http://127.0.0.1:${2:-$tp_port}/_turnpike/health"
}

stop_gateway() {
    kill "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
}

load() { # NAME URL [wrk args...]: warm-up, then the measured run into results/NAME.json
    local name="$1" url="$2"; shift 2
    if [ "$warmup" -gt 0 ]; then
        wrk -t"$wrk_threads" -c"$connections" -d"${warmup}s" "$@" "$url" >/dev/null
    fi
    echo "==> $name"
    wrk -t"$wrk_threads" -c"$connections" -d"${duration}s" "$@" "$url" >"$run/$name.wrk"
    grep '^BENCHJSON ' "$run/$name.wrk" | sed 's/^BENCHJSON //' >"$results/$name.json"
    cat "$results/$name.json"
}

# Scenarios a-d run in interleaved rounds (a, b, c, d, d' in turn, ROUNDS times), so that each
# ratio compares runs made under the same conditions on this shared machine; the report shows
# each scenario's median round.
declare -a round_names=() round_urls=() round_args=()
round_scenario() { # NAME URL [wrk args...]
    round_names+=("$1"); round_urls+=("$2"); shift 2
    round_args+=("$(printf '%q ' "$@")")
}
run_rounds() {
    local i r name
    if [ "$warmup" -gt 0 ]; then
        for i in "${!round_names[@]}"; do
            eval "wrk -t$wrk_threads -c$connections -d${warmup}s ${round_args[$i]} ${round_urls[$i]}" >/dev/null
        done
    fi
    for r in $(seq 1 "$rounds"); do
        for i in "${!round_names[@]}"; do
            name="${round_names[$i]}"
            echo "==> $name (round $r of $rounds)"
            eval "wrk -t$wrk_threads -c$connections -d${round_duration}s ${round_args[$i]} ${round_urls[$i]}" >"$run/$name.r$r.wrk"
            grep '^BENCHJSON ' "$run/$name.r$r.wrk" | sed 's/^BENCHJSON //' >"$results/$name.r$r.json"
            cat "$results/$name.r$r.json"
        done
    done
}

load_tokens() { # NAME URL PREFIX: each request with the next pre-paid token, no warm-up
    local name="$1" url="$2" prefix="$3"
    echo "==> $name"
    wrk -t"$wrk_threads" -c"$connections" -d"${duration}s" -s bench/wrk/tokens.lua "$url" -- "$prefix" >"$run/$name.wrk"
    grep '^BENCHJSON ' "$run/$name.wrk" | sed 's/^BENCHJSON //' >"$results/$name.json"
    cat "$results/$name.json"
}

# ---- Turnpike on SQLite: scenarios c, d, e, f, g ------------------------------------------
gateway_config "$run/sqlite.toml" "$run/data-sqlite" "sqlite://$run/data-sqlite/turnpike.db"
echo "==> minting $tokens_sqlite + $tokens_pg single-call tokens"
"$tb" tokens --service call --calls 1 --count "$tokens_sqlite" --files "$wrk_threads" --out "$run/tokens-sqlite" 2>/dev/null
"$tb" tokens --service call --calls 1 --count "$tokens_pg" --files "$wrk_threads" --out "$run/tokens-pg" 2>/dev/null
"$tb" tokens --service call --calls 1 --count "$tokens_sqlite" --files "$wrk_threads" --out "$run/tokens-sqlite-grown" 2>/dev/null
"$tb" tokens --service pass --calls 0 --valid-secs 86400 --count 1 --out "$run/pass" 2>/dev/null
pass_credential="$(cat "$run/pass.0")"
# d': a second gateway that remembers no credential, so every call is parsed and HMAC-checked.
gateway_config "$run/sqlite-full.toml" "$run/data-sqlite-full" "sqlite://$run/data-sqlite-full/turnpike.db" "$tp_full_port" 0
start_gateway "$run/sqlite-full.toml" "$tp_full_port"
full_gateway_pid="$gateway_pid"
start_gateway "$run/sqlite.toml"

round_scenario a_direct "$up/pass/x" -s bench/wrk/plain.lua
round_scenario b_nginx "http://127.0.0.1:$nginx_port/pass/x" -s bench/wrk/plain.lua
round_scenario c_free "http://127.0.0.1:$tp_port/free/x" -s bench/wrk/plain.lua
round_scenario d_pass "http://127.0.0.1:$tp_port/pass/x" -s bench/wrk/plain.lua -H "Authorization: $pass_credential"
round_scenario d_pass_full "http://127.0.0.1:$tp_full_port/pass/x" -s bench/wrk/plain.lua -H "Authorization: $pass_credential"
run_rounds
kill "$full_gateway_pid" 2>/dev/null || true
wait "$full_gateway_pid" 2>/dev/null || true

curl -s "$up/_bench/reset" >/dev/null
load_tokens e_sqlite "http://127.0.0.1:$tp_port/call/x" "$run/tokens-sqlite"
sleep 1
"$tb" served-check --store "sqlite://$run/data-sqlite/turnpike.db" --upstream "127.0.0.1:$upstream_port" \
    --wrk "$results/e_sqlite.json" --connections "$connections" --out "$results/served_sqlite.json" >/dev/null || failed=1

# e again on a grown store: used tokens added (a million in a full run), fresh tokens presented.
echo "==> e: the SQLite store grown by $grow_rows used tokens"
"$tb" fill --store "sqlite://$run/data-sqlite/turnpike.db" --rows "$grow_rows" >/dev/null
curl -s "$up/_bench/reset" >/dev/null
load_tokens e_sqlite_grown "http://127.0.0.1:$tp_port/call/x" "$run/tokens-sqlite-grown"
sleep 1
"$tb" served-check --store "sqlite://$run/data-sqlite/turnpike.db" --upstream "127.0.0.1:$upstream_port" \
    --wrk "$results/e_sqlite_grown.json" --connections "$connections" --out "$results/served_sqlite_grown.json" \
    --before "$results/served_sqlite.json" >/dev/null || failed=1

load f_challenge "http://127.0.0.1:$tp_port/call/x" -s bench/wrk/plain.lua

sse_query="n=$([ "$mode" = smoke ] && echo 20 || echo 400)&ms=5"
echo "==> g: SSE"
"$tb" sse --url "$up/pass/sse?$sse_query" --out "$results/sse_direct.json" >/dev/null
"$tb" sse --url "http://127.0.0.1:$nginx_port/pass/sse?$sse_query" --out "$results/sse_nginx.json" >/dev/null
"$tb" sse --url "http://127.0.0.1:$tp_port/pass/sse?$sse_query" --header "Authorization: $pass_credential" \
    --out "$results/sse_turnpike.json" >/dev/null

echo "==> h: the agent's wallet (ledger and budget)"
"$tb" wallet --url "http://127.0.0.1:$tp_port/call/x" --data-dir "$run/wallet" \
    --fetches "$wallet_fetches" --concurrency 100 --secs "$wallet_secs" --out "$results/wallet.json" >/dev/null
stop_gateway

# ---- Start-up and memory (SQLite store, as a fresh `turnpike serve` starts) ----------------
echo "==> start-up and memory"
"$tb" startup --turnpike "$tp" --config "$run/sqlite.toml" --addr "127.0.0.1:$tp_port" --path /free/x \
    --runs "$startup_runs" --connections 1000 --out "$results/startup.json" >/dev/null

# ---- Turnpike on PostgreSQL: scenario e ----------------------------------------------------
pg_url="${pg_admin%/*}/$pg_db"
if command -v psql >/dev/null && psql "$pg_admin" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $pg_db" >/dev/null
    psql "$pg_admin" -qc "CREATE DATABASE $pg_db" >/dev/null
    gateway_config "$run/postgres.toml" "$run/data-pg" "$pg_url"
    start_gateway "$run/postgres.toml"
    curl -s "$up/_bench/reset" >/dev/null
    load_tokens e_postgres "http://127.0.0.1:$tp_port/call/x" "$run/tokens-pg"
    sleep 1
    "$tb" served-check --store "$pg_url" --upstream "127.0.0.1:$upstream_port" \
        --wrk "$results/e_postgres.json" --connections "$connections" --out "$results/served_postgres.json" >/dev/null || failed=1
    stop_gateway
    psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $pg_db" >/dev/null
else
    echo "==> SKIPPING e on PostgreSQL: no server answers at $pg_admin"
fi

# ---- Micro-benchmarks ---------------------------------------------------------------------
criterion_args=()
if [ "$mode" = full ] && [ "${BENCH_MICRO:-1}" = 1 ]; then
    echo "==> cargo bench (criterion)"
    rm -rf target/criterion
    TURNPIKE_TEST_POSTGRES_URL="$pg_admin" cargo bench --quiet -p turnpike-l402 -p turnpike-lightning -p turnpike-store >"$run/criterion.log" 2>&1 \
        || { tail -30 "$run/criterion.log" >&2; exit 1; }
    criterion_args=(--criterion target/criterion)
fi

# ---- Report -------------------------------------------------------------------------------
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //' || echo unknown)"
nginx_version="$("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //')"
pg_version="$(psql "$pg_admin" -qAtc 'SHOW server_version' 2>/dev/null || echo none)"
wrk_version="$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2 || true)"
cat >"$results/meta.json" <<EOF
{"mode":"$mode","date":"$(date -u +%Y-%m-%dT%H:%MZ)","commit":"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes')",
 "cores":$(nproc),"cpu":"$cpu","load_generator":"$wrk_version, $wrk_threads thread(s)","connections":$connections,
 "duration_s":$duration,"rounds":$rounds,"round_duration_s":$round_duration,"nginx":"$nginx_version, worker_processes auto, keep-alive to the upstream",
 "postgres":"$pg_version","turnpike_build":"$profile"}
EOF
[ -f bench/notes.md ] && [ "$mode" = full ] && cp bench/notes.md "$results/notes.md"
mkdir -p "$(dirname "$out")"
report_args=(--dir "$results" --out "$out" "${criterion_args[@]}")
[ -n "$baseline" ] && report_args+=(--baseline "$baseline")
"$tb" report "${report_args[@]}" >/dev/null
echo "==> results: $out"
if [ "$failed" != 0 ]; then
    echo "bench: a paid-call check FAILED (a call served twice or unpaid): see $out" >&2
    exit 1
fi
