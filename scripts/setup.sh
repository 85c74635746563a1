#!/usr/bin/env bash
# Install everything pycalico needs on a fresh Debian 12 machine (as root). Idempotent and quick
# when already done: apt runs only when a package is missing; the venv is rebuilt only when
# requirements.lock or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(bird2 chromium chromium-driver etcd-server etcd-client frr iperf3 nftables iptables ipset conntrack tshark docker.io
  podman containernetworking-plugins busybox-static iproute2 iputils-ping runc tcpdump
  python3 python3-venv procps psmisc ca-certificates sockperf ethtool)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2; exit 1
  fi
  echo "setup: installing apt packages: ${missing[*]}"
  apt-get update -qq
  # tshark asks whether non-root users may capture; answer no, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=/usr/bin/python3
stamp=.venv/.pycalico-setup
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/calicoctl ]; then
  exit 0
fi
echo "setup: building .venv"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
echo "$want" > "$stamp"
echo "setup: done"
