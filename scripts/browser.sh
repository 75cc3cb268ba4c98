#!/usr/bin/env bash
# A headless browser for the page test (tests/test_serve_page.py), from the system's packages.
#
#   scripts/browser.sh install   install Debian's chromium (apt-get) when no chromium can be found
#   scripts/browser.sh path      print the browser's path (exit 1 when there is none)
#
# Playwright drives this browser through its executable path; `playwright install` is never run (it
# downloads a browser build of its own, which an offline machine cannot fetch).
set -euo pipefail

die() { echo "browser.sh: $*" >&2; exit 1; }

find_browser() {
    local candidate
    for candidate in "${WORDFORMER_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
    done
    return 1
}

cmd_install() {
    if find_browser >/dev/null; then
        echo "browser.sh: found $(find_browser)"
        return 0
    fi
    [ "$(id -u)" = "0" ] || die "chromium not found and not root: install it (e.g. sudo apt-get install -y chromium)"
    command -v apt-get >/dev/null 2>&1 || die "chromium not found and no apt-get: install chromium with this system's package manager"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null || die "apt-get install chromium failed"
    find_browser >/dev/null || die "chromium installed but /usr/bin/chromium still not found"
    echo "browser.sh: installed $(find_browser)"
}

case "${1:-}" in
    install) cmd_install ;;
    path) find_browser || die "no chromium found; run: scripts/browser.sh install" ;;
    *) die "usage: browser.sh install | path" ;;
esac
