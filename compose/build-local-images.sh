#!/usr/bin/env bash
# Builds the images docker-compose.yml runs from files already on this machine, for hosts that
# cannot pull from a registry: the shoal binary plus the shared libraries `ldd` names on an
# empty base (FROM scratch), and Debian's etcd (etcd-server) the same way.
#
#   compose/build-local-images.sh [path/to/shoal]   (default: target/release/shoal)
#
# Tags: $SHOAL_IMAGE (default shoal:latest) and $ETCD_IMAGE (default shoal-etcd:local).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/shoal}
etcd_bin=${ETCD_BIN:-/usr/bin/etcd}
shoal_image=${SHOAL_IMAGE:-shoal:latest}
etcd_image=${ETCD_IMAGE:-shoal-etcd:local}
[[ -x $bin ]] || { echo "no shoal binary at $bin: cargo build --release --bin shoal" >&2; exit 1; }
[[ -x $etcd_bin ]] || { echo "no etcd at $etcd_bin: apt-get install etcd-server" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# rootfs DIR BINARY TARGET: the binary at TARGET inside DIR, with every library it loads.
rootfs() {
    local dir=$1 binary=$2 target=$3
    mkdir -p "$dir$(dirname "$target")"
    cp "$binary" "$dir$target"
    ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
        while read -r lib; do
            mkdir -p "$dir$(dirname "$lib")"
            cp -L "$lib" "$dir$lib"
        done
}

rootfs "$work/shoal/rootfs" "$bin" /usr/local/bin/shoal
printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["/usr/local/bin/shoal", "start"]\n' \
    >"$work/shoal/Dockerfile"
docker build -q -t "$shoal_image" "$work/shoal" >/dev/null

rootfs "$work/etcd/rootfs" "$etcd_bin" /usr/local/bin/etcd
printf 'FROM scratch\nCOPY rootfs/ /\n' >"$work/etcd/Dockerfile"
docker build -q -t "$etcd_image" "$work/etcd" >/dev/null

echo "built $shoal_image and $etcd_image"
