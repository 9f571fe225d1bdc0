# entrance's container image. It builds with the classic builder too (no `# syntax=` line, no
# BuildKit-only feature such as cache mounts): docker-compose 1.29 and plain `docker build`
# without buildx both work.
#
# Targets:
#   runtime (the default, last stage) — for users: a multi-stage build from source. Its builder
#     stage pulls RUST_IMAGE (an official rust:*-bookworm image) and crates from crates.io, so it
#     NEEDS A REGISTRY and the network; it is NOT exercised in CI. The result is one static binary
#     per program on `scratch`: /entrance (ENTRYPOINT), /mock-idp and /whoami (the compose rig's
#     mock IdP and demo app; a test tool and a test app), the CA bundle, numeric non-root UID
#     10001, a HEALTHCHECK through `entrance healthcheck`, and /data (a volume for the SQLite
#     store) as the only writable path, so it runs with a read-only root filesystem.
#       docker build -t entrance:latest .
#   rig — what CI's compose rig runs (deploy/build-local-images.sh): the same three programs
#     built on the host by cargo, copied from the build context's bin/ onto RIG_BASE, a Debian
#     bookworm base made locally by debootstrap (no pull). Those binaries are dynamically linked
#     against that base's glibc. It is the first stage so that the classic builder, which runs
#     every stage up to the target, never reaches the registry-only stages below.
#
# The static binary: the toolchain has no musl target, so it is the gnu target with
# `-C target-feature=+crt-static`. glibc >= 2.34 has its `files` and `dns` NSS back ends inside
# libc, so a static binary's getaddrinfo resolves container names on `scratch` with no
# /etc/nsswitch.conf (checked with a `gcc -static` C probe on a compose network, not with this
# build, which has not been run: see docs/DEPLOY.md). glibc's link-time warning about
# getaddrinfo is expected.

ARG RIG_BASE=entrance-rig/base:bookworm
ARG RUST_IMAGE=rust:1-bookworm

# ---- rig: host-built binaries on the local Debian base (CI) --------------------------------
FROM ${RIG_BASE} AS rig
COPY bin/entrance bin/mock-idp bin/whoami /
RUN mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
VOLUME ["/data"]
WORKDIR /data
ENTRYPOINT ["/entrance"]
CMD ["serve", "--config", "/etc/entrance/entrance.toml"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/entrance", "healthcheck", "--config", "/etc/entrance/entrance.toml"]

# ---- builder: static binaries from source (needs a registry; not run in CI) ----------------
FROM ${RUST_IMAGE} AS builder
ENV CARGO_TERM_COLOR=never \
    RUSTFLAGS="-C target-feature=+crt-static"
# --target keeps build scripts and proc macros dynamic while the binaries are static.
ARG TARGET=x86_64-unknown-linux-gnu
WORKDIR /src
# The dependency layer: the manifests with stub sources, so a source change does not rebuild
# every crate.
COPY Cargo.toml Cargo.lock ./
COPY mock-idp/Cargo.toml mock-idp/Cargo.toml
RUN mkdir -p src mock-idp/src examples \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > mock-idp/src/main.rs && touch mock-idp/src/lib.rs \
 && for e in whoami bench_baseline bench_logins bench_sessions; do echo 'fn main() {}' > examples/$e.rs; done \
 && cargo build --release --locked --target "$TARGET" --workspace --bins \
 && rm -rf src mock-idp/src examples
COPY . .
RUN touch src/main.rs src/lib.rs mock-idp/src/main.rs mock-idp/src/lib.rs \
 && cargo build --release --locked --target "$TARGET" -p entrance --bin entrance --example whoami \
 && cargo build --release --locked --target "$TARGET" -p mock-idp --bin mock-idp \
 && mkdir -p /out/data \
 && cp "target/$TARGET/release/entrance" "target/$TARGET/release/mock-idp" \
       "target/$TARGET/release/examples/whoami" /out/

# ---- runtime: scratch ---------------------------------------------------------------------
FROM scratch AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="entrance" \
      org.opencontainers.image.description="OpenID Connect login callback endpoint for Microsoft Entra ID and any OIDC provider" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/entrance /out/mock-idp /out/whoami /
COPY --from=builder --chown=10001:10001 /out/data /data
USER 10001:10001
VOLUME ["/data"]
WORKDIR /data
EXPOSE 8080
ENTRYPOINT ["/entrance"]
CMD ["serve", "--config", "/etc/entrance/entrance.toml"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/entrance", "healthcheck", "--config", "/etc/entrance/entrance.toml"]
