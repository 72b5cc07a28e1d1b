#!/usr/bin/env bash
# A real LNbits (1.6.2, from PyPI) on this machine, as a test peer for the LNbits backend.
#
#   scripts/lnbits.sh install   venv with lnbits==1.6.2 (skipped when already there)
#   scripts/lnbits.sh start     start it (FakeWallet funding source: no real money), set up the
#                               super user, write the info JSON; when running, re-check health
#   scripts/lnbits.sh stop      stop it and delete its data
#   scripts/lnbits.sh status    say whether it runs
#
# Environment:
#   TURNPIKE_LNBITS_VENV   the venv              (default: <repo>/.venv-lnbits)
#   TURNPIKE_LNBITS_PORT   port on 127.0.0.1      (default: 5555)
#   TURNPIKE_LNBITS_INFO   the info JSON written  (default: <repo>/target/lnbits/info.json)
#                          {"url", "access_token" (super user, Bearer), "username", "password"}
#
# The pid file and LNbits' log (lnbits.log) sit next to the info JSON. LNbits' data (SQLite) goes
# to a fresh temporary directory on every start, deleted by `stop`.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TURNPIKE_LNBITS_VENV:-$repo/.venv-lnbits}"
port="${TURNPIKE_LNBITS_PORT:-5555}"
info="${TURNPIKE_LNBITS_INFO:-$repo/target/lnbits/info.json}"
state_dir="$(dirname "$info")"
pid_file="$state_dir/lnbits.pid"
data_file="$state_dir/lnbits.datadir"
log_file="$state_dir/lnbits.log"
url="http://127.0.0.1:$port"
lnbits_version="1.6.2"
start_timeout=90

say() { echo "lnbits.sh: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

py() { "$venv/bin/python" "$@"; }

# HTTP helper: `http METHOD URL [JSON BODY] [BEARER TOKEN]` prints "<status> <body>"; status 000
# when nothing answered. Redirects are not followed (LNbits answers 307 until set up).
http() {
    py - "$@" <<'PY'
import json, sys, urllib.request, urllib.error

method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 and sys.argv[3] else None
token = sys.argv[4] if len(sys.argv) > 4 else None

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

req = urllib.request.Request(url, data=body, method=method)
if body is not None:
    req.add_header("Content-Type", "application/json")
if token:
    req.add_header("Authorization", "Bearer " + token)
opener = urllib.request.build_opener(NoRedirect)
try:
    with opener.open(req, timeout=5) as resp:
        print(resp.status, resp.read().decode(errors="replace"))
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode(errors="replace"))
except Exception:
    print("000")
PY
}

health_status() {
    local out
    out="$(http GET "$url/api/v1/health")"
    echo "${out%% *}"
}

is_installed() {
    [ -x "$venv/bin/python" ] && py - "$lnbits_version" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import bolt11  # LNbits' bolt11 dependency fails to import with bitstring 5
sys.exit(0 if version("lnbits") == sys.argv[1] else 1)
PY
}

cmd_install() {
    if is_installed; then
        say "lnbits $lnbits_version already installed in $venv"
        return
    fi
    command -v python3 >/dev/null || die "python3 is needed to install LNbits"
    say "installing lnbits $lnbits_version into $venv (about a minute)"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # bitstring 5 removed ConstBitStream, which the bolt11 package that LNbits uses imports.
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "lnbits==$lnbits_version" "bitstring<5"
    is_installed || die "lnbits $lnbits_version does not import after installation"
}

running_pid() {
    [ -f "$pid_file" ] || return 1
    local pid
    pid="$(cat "$pid_file")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

wait_healthy() {
    local pid="$1" deadline=$((SECONDS + start_timeout)) code
    while [ "$SECONDS" -lt "$deadline" ]; do
        code="$(health_status)"
        case "$code" in
        200 | 307) echo "$code" && return 0 ;;
        esac
        if ! kill -0 "$pid" 2>/dev/null; then
            say "LNbits exited; the end of its log ($log_file):"
            tail -n 30 "$log_file" >&2 || true
            return 1
        fi
        sleep 0.5
    done
    say "LNbits did not answer $url/api/v1/health within ${start_timeout}s; log: $log_file"
    return 1
}

write_info() {
    local token="$1" username="$2" password="$3"
    local tmp="$info.tmp"
    (umask 077 && py - "$url" "$token" "$username" "$password" >"$tmp" <<'PY')
import json, sys
url, token, username, password = sys.argv[1:5]
print(json.dumps({"url": url, "access_token": token, "username": username, "password": password}))
PY
    mv "$tmp" "$info"
}

cmd_start() {
    is_installed || die "LNbits is not installed in $venv: run scripts/lnbits.sh install"
    mkdir -p "$state_dir"

    local pid
    if pid="$(running_pid)"; then
        local code
        code="$(wait_healthy "$pid")" || die "LNbits (pid $pid) runs but is not healthy"
        [ "$code" = 200 ] && [ -s "$info" ] ||
            die "LNbits (pid $pid) runs but is not set up ($info missing); run scripts/lnbits.sh stop, then start"
        say "already running at $url (pid $pid); info: $info"
        echo "$info"
        return
    fi
    rm -f "$pid_file" "$info"

    if [ "$(health_status)" != 000 ]; then
        die "something else already answers on $url; set TURNPIKE_LNBITS_PORT to a free port"
    fi

    local site data
    # Located without importing lnbits: importing it creates ./data in the current directory.
    site="$(py -c 'import importlib.util, os; print(os.path.dirname(os.path.dirname(importlib.util.find_spec("lnbits").origin)))')"
    data="$(mktemp -d "${TMPDIR:-/tmp}/turnpike-lnbits.XXXXXX")"
    echo "$data" >"$data_file"

    say "starting LNbits $lnbits_version (FakeWallet) at $url; data in $data; log: $log_file"
    # Started from site-packages: LNbits looks for ./lnbits/static. setsid gives it its own
    # process group (it runs a child process), so `stop` can end both.
    (
        cd "$site"
        exec env \
            LNBITS_BACKEND_WALLET_CLASS=FakeWallet \
            LNBITS_DATA_FOLDER="$data" \
            LNBITS_ADMIN_UI=true \
            AUTH_HTTPS_ONLY=false \
            FAKE_WALLET_SECRET="turnpike-test-$RANDOM$RANDOM" \
            LNBITS_PRICE_AGGREGATOR_ENABLED=false \
            setsid "$venv/bin/lnbits" --host 127.0.0.1 --port "$port"
    ) >"$log_file" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pid_file"

    local code
    code="$(wait_healthy "$pid")" || {
        cmd_stop
        die "LNbits did not start"
    }

    if [ "$code" = 307 ]; then
        local username password out status body token
        username="turnpike$RANDOM$RANDOM"
        password="$(py -c 'import secrets; print(secrets.token_hex(16))')"
        out="$(http PUT "$url/api/v1/auth/first_install" \
            "{\"username\":\"$username\",\"password\":\"$password\",\"password_repeat\":\"$password\"}")"
        status="${out%% *}"
        body="${out#* }"
        [ "$status" = 200 ] || die "first_install answered $status: $body"
        token="$(py -c 'import json, sys; print(json.loads(sys.argv[1])["access_token"])' "$body")" ||
            die "first_install gave no access_token: $body"
        write_info "$token" "$username" "$password"
        [ "$(health_status)" = 200 ] || die "LNbits is not healthy after first_install"
    else
        die "a fresh LNbits should ask for first_install, but /api/v1/health answered $code"
    fi
    say "LNbits ready at $url (pid $pid); info: $info"
    echo "$info"
}

cmd_stop() {
    local pid
    if pid="$(running_pid)"; then
        say "stopping LNbits (pid $pid)"
        # Its own process group when setsid did not need to fork (the usual case).
        if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then
            kill -TERM -- "-$pid" 2>/dev/null || true
        else
            kill -TERM "$pid" 2>/dev/null || true
        fi
        local i
        for i in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "LNbits did not stop on SIGTERM; killing it"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    else
        say "LNbits is not running"
    fi
    if [ -f "$data_file" ]; then
        local data
        data="$(cat "$data_file")"
        case "$data" in
        */turnpike-lnbits.*) rm -rf -- "$data" ;;
        esac
        rm -f "$data_file"
    fi
    rm -f "$pid_file" "$info"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "running at $url (pid $pid), /api/v1/health: $(health_status); info: $info"
    else
        echo "not running"
        return 1
    fi
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
