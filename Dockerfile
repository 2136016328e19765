# One Dockerfile, one final stage per binary: docker build --target <binary> .
# scripts/build-images builds them all with explicit tags.
#
# Stages: cargo-chef caches the dependency build (recipe.json changes only when Cargo.lock or a
# manifest does); the builder compiles every binary once with --locked; each final stage is
# distroless/cc (glibc, no shell) running as nonroot, with the binary as a vector ENTRYPOINT.
# .dockerignore leaves out what no binary is built from (docs, the chart, *.md), so editing them
# does not recompile anything.
#
# Base images are pinned by digest where one could be read from the image's publisher:
# - rust:1.95.0-slim-bookworm: the multi-platform index digest recorded by docker-library/repo-info
#   (the official images' own record of every tag). Change RUST_IMAGE to move Rust.
# - gcr.io/distroless/cc-debian12:nonroot: no digest could be verified where this was written;
#   pin it with RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest> (the digest
#   `docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot` prints).

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm@sha256:b8ecdb97c5b9c1ae058249f72710dbe33d4da19f7b8d911bd3c72e5f048af251
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
      --bin order-service --bin inventory-service --bin payment-service \
      --bin shipping-service --bin notification-service --bin retry-worker \
      --bin fulfillment --bin fulfillment-e2e

FROM ${RUNTIME_IMAGE} AS runtime
# VERSION and REVISION come from scripts/build-images; labels only, so they never bust the compile cache.
# RUNTIME_IMAGE again, so base.name names the base this image was built on (a digest, a mirror).
ARG RUNTIME_IMAGE
ARG VERSION=0.0.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="fulfillment" \
      org.opencontainers.image.description="Event-driven order fulfillment on Redis Streams" \
      org.opencontainers.image.source="https://github.com/fulfillment/fulfillment" \
      org.opencontainers.image.documentation="https://github.com/fulfillment/fulfillment#readme" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="fulfillment maintainers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
# distroless nonroot: uid and gid 65532
USER 65532:65532
EXPOSE 8080

FROM runtime AS order-service
LABEL org.opencontainers.image.title="order-service"
COPY --from=builder /app/target/release/order-service /usr/local/bin/order-service
ENTRYPOINT ["/usr/local/bin/order-service"]

FROM runtime AS inventory-service
LABEL org.opencontainers.image.title="inventory-service"
COPY --from=builder /app/target/release/inventory-service /usr/local/bin/inventory-service
ENTRYPOINT ["/usr/local/bin/inventory-service"]

FROM runtime AS payment-service
LABEL org.opencontainers.image.title="payment-service"
COPY --from=builder /app/target/release/payment-service /usr/local/bin/payment-service
ENTRYPOINT ["/usr/local/bin/payment-service"]

FROM runtime AS shipping-service
LABEL org.opencontainers.image.title="shipping-service"
COPY --from=builder /app/target/release/shipping-service /usr/local/bin/shipping-service
ENTRYPOINT ["/usr/local/bin/shipping-service"]

FROM runtime AS notification-service
LABEL org.opencontainers.image.title="notification-service"
COPY --from=builder /app/target/release/notification-service /usr/local/bin/notification-service
ENTRYPOINT ["/usr/local/bin/notification-service"]

FROM runtime AS retry-worker
LABEL org.opencontainers.image.title="retry-worker"
COPY --from=builder /app/target/release/retry-worker /usr/local/bin/retry-worker
ENTRYPOINT ["/usr/local/bin/retry-worker"]

FROM runtime AS fulfillment
LABEL org.opencontainers.image.title="fulfillment"
COPY --from=builder /app/target/release/fulfillment /usr/local/bin/fulfillment
ENTRYPOINT ["/usr/local/bin/fulfillment"]

FROM runtime AS fulfillment-e2e
LABEL org.opencontainers.image.title="fulfillment-e2e"
COPY --from=builder /app/target/release/fulfillment-e2e /usr/local/bin/fulfillment-e2e
ENTRYPOINT ["/usr/local/bin/fulfillment-e2e"]
