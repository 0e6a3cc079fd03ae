#!/usr/bin/env bash
# Installs everything AgentLite needs on a fresh Debian or Ubuntu machine: system tools from the
# package manager (only when missing), then the package with its dev and ray extras in ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
# The in-box end of each network bridge (127.0.0.1:<port> to a Unix socket of the host-side proxy).
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# libseccomp compiles the boxes' syscall filter (through the pyseccomp bindings).
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || need_apt+=(libseccomp2)
# Headless Chromium for the dashboard's browser tests (driven by Playwright; no browser download).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing system packages: ${need_apt[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# As root, boxes run as this unprivileged system user, never as host root.
if [ "$(id -u)" -eq 0 ] && ! id agentlite-box >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin agentlite-box
fi

VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[dev,ray]'
# The agent CLIs, pinned in agent-clis/package-lock.json, into a project-local prefix that boxes see.
(cd agent-clis && npm ci --no-audit --no-fund --loglevel=error)
echo "installed: $("$VENV/bin/agentlite" --version)" >&2
