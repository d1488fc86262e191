# syntax=docker/dockerfile:1
# One image for every WA Events Processor binary (README: Containers and Kubernetes). The
# command picks the binary; the default is wa-realtime:
#   docker build -t wa-events .
#   docker run --rm --network host wa-events                  # wa-realtime
#   docker run --rm --network host wa-events wa-historical    # or wa-dlq-retry, wa-onboarding, wa-bridge
#   docker run --rm --network host wa-events wa-admin tenants
# `just image` builds this same file with podman on local base images (no registry needed).

# The bases are arguments so that a build without a registry can use local images; the build
# base needs a Rust toolchain at the workspace's rust-version or newer, a C compiler and libc
# headers (ring), and CARGO_HOME=/usr/local/cargo as in the official rust image.
ARG BUILD_BASE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_BASE=docker.io/library/debian:bookworm-slim

FROM ${BUILD_BASE} AS build
# Extra cargo features, e.g. "wa-realtime/cloudwatch wa-historical/cloudwatch" (METRICS_SINK=cloudwatch).
ARG CARGO_FEATURES=""
ENV CARGO_HOME=/usr/local/cargo
WORKDIR /src
COPY . .
# The crate registry and the target directory are cache mounts: they outlive the build, so a
# rebuild after a source change compiles only the workspace's own crates. The binaries leave
# the cache mount by a copy to /out without their debug info (77 of a function binary's
# 95 MB): symbols stay, so a backtrace still names its functions.
RUN --mount=type=cache,id=wa-events-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=wa-events-target,target=/src/target,sharing=locked \
    cargo build --release --locked ${CARGO_FEATURES:+--features "$CARGO_FEATURES"} \
      -p wa-realtime -p wa-historical -p wa-dlq-retry -p wa-onboarding -p wa-bridge -p wa-admin \
 && mkdir -p /out \
 && for bin in wa-realtime wa-historical wa-dlq-retry wa-onboarding wa-bridge wa-admin; do \
      strip --strip-debug -o "/out/$bin" "target/release/$bin"; \
    done

FROM ${RUNTIME_BASE}
# ca-certificates for TLS to NATS, Postgres and AWS; nothing else (no compilers, no shell tools
# beyond the base's). Versions come from the base release's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin wa
COPY --from=build /out/ /usr/local/bin/
COPY deploy/container/wa-healthcheck /usr/local/bin/wa-healthcheck
# A numeric user, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# HTTP_PORT defaults: realtime, historical, dlq-retry, onboarding, bridge.
EXPOSE 8081 8082 8083 8084 8085
# `/health` of whichever binary runs (its HTTP_PORT, or that binary's default port).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["wa-healthcheck"]
# The binaries stop on SIGTERM: they finish and ack the batch in flight, then exit 0.
STOPSIGNAL SIGTERM
CMD ["wa-realtime"]
