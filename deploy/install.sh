#!/usr/bin/env bash
# Install xio as a systemd service: a virtualenv in /opt/xio/venv holding xio from this
# checkout, the unit in /etc/systemd/system, the example configuration in /etc/xio/node.toml
# (kept if one is there already). Run it as root from a clone:
#
#   sudo deploy/install.sh            then: systemctl enable --now xio-node
#
# Options:
#   --root DIR    install below DIR instead of / (packaging, tests): nothing is started
#   --upgrade     reinstall xio into an existing /opt/xio/venv
#
# A virtualenv, because Debian 12 and Ubuntu 24.04 refuse `pip install` into the system's
# Python (PEP 668). Running it again is safe: the configuration is never overwritten.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
root=""
upgrade=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a folder}; shift 2 ;;
    --upgrade) upgrade=1; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
root=${root%/}
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it writes /opt/xio, /etc/xio and /etc/systemd/system)" >&2
  exit 1
fi

prefix=/opt/xio
venv="$root$prefix/venv"
python=${PYTHON:-python3}

# Debian's python3 makes a virtualenv only with python3-venv (no ensurepip without it).
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -yqq python3-venv
  else
    echo "install.sh: '$python -m venv' needs Debian's python3-venv: apt install python3-venv" >&2
    exit 1
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
  upgrade=1
fi
if [ -n "$upgrade" ] || [ ! -x "$venv/bin/xio-node" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$src"
fi

install -D -m 0644 "$src/deploy/xio-node.service" "$root/etc/systemd/system/xio-node.service"
install -d -m 0755 "$root/etc/xio"
if [ ! -e "$root/etc/xio/node.toml" ]; then
  install -m 0644 "$src/deploy/node.toml" "$root/etc/xio/node.toml"
  echo "install.sh: wrote $root/etc/xio/node.toml (edit peers and apps there)"
else
  echo "install.sh: kept $root/etc/xio/node.toml"
fi
echo "install.sh: xio $("$venv/bin/xio-node" --version | cut -d' ' -f2) in $venv"

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install.sh: now: systemctl enable --now xio-node; logs: journalctl -u xio-node -f"
elif [ -z "$root" ]; then
  echo "install.sh: systemd is not running here; start by hand: $venv/bin/xio-node"
fi
