#!/usr/bin/env bash
# Runs Turnpike's whole test suite: formatting, lints, and every test, including the interop
# test against pymacaroons (an independent macaroon implementation, installed here in a venv),
# the `turnpike mcp` tests with the official MCP Python SDK (`mcp`, same venv), the metrics test
# with the official Prometheus client's text-format parser (`prometheus-client`, same venv), the
# hub's per-provider OpenAPI documents with `openapi-spec-validator` (same venv),
# the LNbits backend's tests against a real LNbits (scripts/lnbits.sh), and the x402 tests
# against the official x402 client, server middleware (@x402/express) and facilitator on a local
# chain (scripts/x402-env.sh; Node.js and npm needed), and the admin dashboard's test in Debian's
# chromium driven by npm playwright-core (scripts/dashboard-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TURNPIKE_VENV:-$PWD/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating the test venv in $venv"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import pymacaroons, mcp, prometheus_client, openapi_spec_validator" 2>/dev/null; then
    echo "==> installing the Python test requirements"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
fi
export TURNPIKE_TEST_PYTHON="$venv/bin/python"
# Tests that need an outside peer fail, rather than skip, when it is missing.
export TURNPIKE_STRICT_TESTS=1

# PostgreSQL: the store and replica tests need a real server. On CI it is mandatory (started
# here if it is installed but stopped); elsewhere its tests are skipped, and this says so.
pg_url="${TURNPIKE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_up && [ "${CI:-}" = "true" ] && command -v pg_ctlcluster >/dev/null; then
    echo "==> starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if pg_up; then
    export TURNPIKE_TEST_POSTGRES_URL="$pg_url"
elif [ "${CI:-}" = "true" ]; then
    echo "PostgreSQL is required on CI but no server answers on 127.0.0.1:5432" >&2
    exit 1
else
    echo "==> SKIPPING the PostgreSQL tests: no server on 127.0.0.1:5432 (set TURNPIKE_TEST_POSTGRES_URL)"
fi
if [ "${CI:-}" = "true" ]; then
    export TURNPIKE_REQUIRE_POSTGRES=1
fi

# LNbits: the LNbits backend's tests run against a real one (FakeWallet funding source, no real
# money), installed in its own venv and started here; stopped at exit unless it already ran.
# Peers started here are stopped at exit, in reverse order.
cleanup=()
on_exit() {
    local i
    for ((i = ${#cleanup[@]} - 1; i >= 0; i--)); do
        bash "${cleanup[i]}" stop || true
    done
}
trap on_exit EXIT

echo "==> LNbits"
export TURNPIKE_LNBITS_INFO="${TURNPIKE_LNBITS_INFO:-$PWD/target/lnbits/info.json}"
bash scripts/lnbits.sh install
if ! bash scripts/lnbits.sh status >/dev/null 2>&1; then
    cleanup+=(scripts/lnbits.sh)
fi
bash scripts/lnbits.sh start >/dev/null

# x402: the offline chain for the x402 tests with the official client and server middleware
# (anvil, Circle's FiatTokenV2_2, the reference facilitator, @x402/fetch and @x402/express, all
# from npm, all on loopback; about 15 s to install on a cold npm cache, 3 s to start); stopped at
# exit unless it already ran.
echo "==> x402 test chain"
export TURNPIKE_X402_INFO="${TURNPIKE_X402_INFO:-$PWD/target/x402/info.json}"
bash scripts/x402-env.sh install
if ! bash scripts/x402-env.sh status >/dev/null 2>&1; then
    cleanup+=(scripts/x402-env.sh)
fi
bash scripts/x402-env.sh start >/dev/null

# The dashboard's browser test: Debian's chromium (installed here when missing, as root on CI)
# and playwright-core pinned in crates/turnpike/tests/dashboard (npm ci, about 2 s; no browser
# download). Nothing to start: the test starts the gateway and the browser itself.
echo "==> dashboard browser test env"
if [ "${CI:-}" = "true" ]; then
    export TURNPIKE_INSTALL_CHROMIUM=1
fi
bash scripts/dashboard-env.sh install

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --workspace --no-fail-fast
echo "==> micro-benchmarks (test mode: each runs once)"
cargo test --quiet --benches -p turnpike-l402 -p turnpike-lightning -p turnpike-store
echo "==> benchmark suite, smoke run (no timing asserted)"
bash bench/run.sh --smoke
