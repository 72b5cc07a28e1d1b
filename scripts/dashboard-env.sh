#!/usr/bin/env bash
# What the dashboard's browser test needs (crates/turnpike/tests/dashboard_e2e.rs, which runs
# crates/turnpike/tests/dashboard/dashboard.mjs): Debian's `chromium` and npm `playwright-core`
# (pinned in the package-lock.json beside that script; it drives that chromium and downloads
# no browser of its own).
#
#   scripts/dashboard-env.sh install   apt-get install chromium when missing (only as root, and
#                                      only on CI or with TURNPIKE_INSTALL_CHROMIUM=1); npm ci of
#                                      the lock file into the env folder, install scripts off
#                                      (skipped when already there)
#   scripts/dashboard-env.sh status    say whether both are there
#
# Environment:
#   TURNPIKE_DASHBOARD_ENV   the npm folder        (default: <repo>/.dashboard-env)
#   TURNPIKE_CHROMIUM        the browser binary    (default: /usr/bin/chromium)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
src="$repo/crates/turnpike/tests/dashboard"
env_dir="${TURNPIKE_DASHBOARD_ENV:-$repo/.dashboard-env}"
chromium="${TURNPIKE_CHROMIUM:-/usr/bin/chromium}"
install_timeout=300

say() { echo "dashboard-env.sh: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

npm_installed() {
    [ -f "$env_dir/package-lock.json" ] && cmp -s "$src/package-lock.json" "$env_dir/package-lock.json" &&
        [ -f "$env_dir/node_modules/playwright-core/package.json" ]
}

install_chromium() {
    [ -x "$chromium" ] && return
    if [ "$(id -u)" = 0 ] && { [ "${CI:-}" = "true" ] || [ "${TURNPIKE_INSTALL_CHROMIUM:-}" = 1 ]; }; then
        say "installing Debian's chromium (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        timeout "$install_timeout" apt-get install -y -qq chromium >/dev/null ||
            { timeout "$install_timeout" apt-get update -qq && timeout "$install_timeout" apt-get install -y -qq chromium >/dev/null; } ||
            die "apt-get install chromium failed"
        [ -x "$chromium" ] || die "chromium installed, but $chromium is missing: set TURNPIKE_CHROMIUM"
    else
        die "$chromium is missing: apt-get install chromium (or set TURNPIKE_CHROMIUM; as root, TURNPIKE_INSTALL_CHROMIUM=1 lets this script install it)"
    fi
}

cmd_install() {
    install_chromium
    command -v node >/dev/null || die "node (>= 20) is needed"
    command -v npm >/dev/null || die "npm is needed"
    if npm_installed; then
        say "playwright-core already installed in $env_dir; chromium: $chromium"
        return
    fi
    say "installing playwright-core into $env_dir (npm ci, install scripts off: no browser download)"
    mkdir -p "$env_dir"
    cp "$src/package.json" "$src/package-lock.json" "$env_dir/"
    (cd "$env_dir" && timeout "$install_timeout" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
        die "npm ci failed or took longer than ${install_timeout}s"
    npm_installed || die "installed, but playwright-core is missing in $env_dir"
}

cmd_status() {
    if [ -x "$chromium" ] && npm_installed; then
        echo "ready: $chromium, playwright-core in $env_dir"
    else
        echo "not installed"
        return 1
    fi
}

case "${1:-}" in
install) cmd_install ;;
status) cmd_status ;;
*)
    echo "usage: $0 install|status" >&2
    exit 2
    ;;
esac
