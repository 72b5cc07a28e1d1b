#!/usr/bin/env bash
# Runs Turnpike's whole test suite: formatting, lints, and every test, including the interop
# test against pymacaroons (an independent macaroon implementation, installed here in a venv).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TURNPIKE_VENV:-$PWD/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating the test venv in $venv"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import pymacaroons" 2>/dev/null; then
    echo "==> installing the Python test requirements"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
fi
export TURNPIKE_TEST_PYTHON="$venv/bin/python"
# Tests that need an outside peer fail, rather than skip, when it is missing.
export TURNPIKE_STRICT_TESTS=1

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --workspace --no-fail-fast
