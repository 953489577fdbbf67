#!/usr/bin/env bash
# Installs the system packages Shoal needs to build and test, when they are missing:
# libclang-dev (RocksDB bindings), protobuf-compiler and libprotobuf-dev (etcd-client compiles
# etcd's protos, which import the well-known types), etcd-server
# (the cluster tests start their own etcd),
# PostgreSQL 15 (psql and the reference server of the differential tests), pgJDBC and a JDK,
# Python's venv (the driver tests install the Python drivers from PyPI themselves), and Docker
# with Compose (the compose cluster test builds its images from local files; the daemon is
# started here when it is installed but not running), iproute2 and iptables (the fault tests
# give each node a network namespace and cut links with iptables).
set -euo pipefail

packages=(libclang-dev protobuf-compiler libprotobuf-dev clang openssl procps postgresql-15
    postgresql-client-15 libpostgresql-jdbc-java etcd-server iproute2 iptables)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v javac >/dev/null || missing+=(default-jdk-headless)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
command -v docker >/dev/null || missing+=(docker.io)
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
    missing+=(docker-compose)
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a cluster on install; tests start their own servers on free ports.
    if command -v pg_lsclusters >/dev/null && pg_lsclusters -h | grep -q online; then
        "${sudo_cmd[@]}" pg_ctlcluster 15 main stop || true
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust 1.89 or later (https://rustup.rs)" >&2
    exit 1
fi
# The test command runs rustfmt and clippy.
if command -v rustup >/dev/null; then
    for c in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
    done
fi

# The compose test needs a running Docker daemon.
if ! docker info >/dev/null 2>&1 && command -v dockerd >/dev/null; then
    echo "starting dockerd"
    "${sudo_cmd[@]}" sh -c 'nohup dockerd >/var/log/shoal-dockerd.log 2>&1 &'
    for _ in $(seq 1 30); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
fi
