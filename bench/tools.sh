#!/usr/bin/env bash
# Installs what `make bench` runs beside Prox, on a fresh Debian machine, as .ci/run does for the
# tests: the reference proxies (nginx, haproxy, caddy), the load generators (wrk, h2load, ab) and
# the HTTP/3 client (gtlsclient). Packages already there are left alone; without apt-get (another
# system) it only says what is missing, and the bench stops at the first tool it cannot start.
set -uo pipefail

# command -> Debian package
declare -A PACKAGES=(
  [nginx]=nginx
  [haproxy]=haproxy
  [caddy]=caddy
  [wrk]=wrk
  [h2load]=nghttp2-client
  [ab]=apache2-utils
  [gtlsclient]=ngtcp2-client
  [taskset]=util-linux
)

missing=()
for cmd in "${!PACKAGES[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGES[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "make bench needs: ${missing[*]} (install them; no apt-get here)" >&2
  exit 0
fi
echo "Installing for the bench: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || apt-get update
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/prox-bench-apt.log 2>&1 ||
  { tail -n 30 /tmp/prox-bench-apt.log; echo "apt-get install failed"; exit 1; }
# Debian starts the services it installs (nginx and caddy on :80, haproxy): the bench runs its
# own instances on ports of its choosing, and a stray one would only take CPU from them.
for svc in nginx haproxy caddy; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
