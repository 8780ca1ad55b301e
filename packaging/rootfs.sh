#!/bin/sh
# Assembles the complete file set of the FROM-scratch image in OUT_DIR:
#   /NAME                               the executable
#   /lib*/…, /usr/lib*/…                every shared library it links (from ldd), incl. the loader
#   /etc/ssl/certs/ca-certificates.crt  CA roots for https upstreams and ACME
#   /config.yaml                        the repository's config.yaml listening on $PROX_LISTEN
#   /static/                            the default site and error pages
#   /tmp/                               empty, mode 1777
# The Dockerfile runs this in its build stage; tests/integration/chroot_test.ts runs it on the
# host and starts Prox inside the result with chroot, proving nothing else is needed.
#
# Usage: packaging/rootfs.sh OUT_DIR EXECUTABLE [NAME]    (NAME defaults to "prox")
# Env:   PROX_LISTEN  listen_addr written into /config.yaml (default 0.0.0.0:3000, so the
#                     container is reachable; the repository default 127.0.0.1 would not be)
set -eu

if [ $# -lt 2 ]; then
  echo "usage: $0 OUT_DIR EXECUTABLE [NAME]" >&2
  exit 2
fi
out=$1
exe=$2
name=${3:-prox}
listen=${PROX_LISTEN:-0.0.0.0:3000}
repo=$(cd "$(dirname "$0")/.." && pwd)
ca=/etc/ssl/certs/ca-certificates.crt

[ -x "$exe" ] || { echo "Cannot package \"$exe\": not an executable file" >&2; exit 1; }
[ -f "$ca" ] || { echo "Cannot package CA roots: $ca is missing (apt-get install ca-certificates)" >&2; exit 1; }

mkdir -p "$out/etc/ssl/certs" "$out/tmp"
chmod 0755 "$out"
chmod 1777 "$out/tmp"
cp -L "$exe" "$out/$name"
chmod 0755 "$out/$name"

# Shared libraries: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and the loader line
# "/lib64/ld-linux-x86-64.so.2 (0x…)". vdso has no file. Copied dereferenced, at the same path.
ldd "$exe" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
  while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done

cp -L "$ca" "$out$ca"
sed -E "s|^listen_addr:.*|listen_addr: \"$listen\"|" "$repo/config.yaml" >"$out/config.yaml"
cp -RL "$repo/static" "$out/static"
