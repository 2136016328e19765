# One Dockerfile, one final stage per binary: docker build --target <binary> .
# scripts/build-images builds them all with explicit tags.
#
# Stages: cargo-chef caches the dependency build (recipe.json changes only when Cargo.lock or a
# manifest does); the builder compiles every binary once with --locked; each final stage is
# distroless/cc (glibc, no shell) running as nonroot, with the binary as a vector ENTRYPOINT.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
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

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
# distroless nonroot: uid and gid 65532
USER 65532:65532
EXPOSE 8080

FROM runtime AS order-service
COPY --from=builder /app/target/release/order-service /usr/local/bin/order-service
ENTRYPOINT ["/usr/local/bin/order-service"]

FROM runtime AS inventory-service
COPY --from=builder /app/target/release/inventory-service /usr/local/bin/inventory-service
ENTRYPOINT ["/usr/local/bin/inventory-service"]

FROM runtime AS payment-service
COPY --from=builder /app/target/release/payment-service /usr/local/bin/payment-service
ENTRYPOINT ["/usr/local/bin/payment-service"]

FROM runtime AS shipping-service
COPY --from=builder /app/target/release/shipping-service /usr/local/bin/shipping-service
ENTRYPOINT ["/usr/local/bin/shipping-service"]

FROM runtime AS notification-service
COPY --from=builder /app/target/release/notification-service /usr/local/bin/notification-service
ENTRYPOINT ["/usr/local/bin/notification-service"]

FROM runtime AS retry-worker
COPY --from=builder /app/target/release/retry-worker /usr/local/bin/retry-worker
ENTRYPOINT ["/usr/local/bin/retry-worker"]

FROM runtime AS fulfillment
COPY --from=builder /app/target/release/fulfillment /usr/local/bin/fulfillment
ENTRYPOINT ["/usr/local/bin/fulfillment"]

FROM runtime AS fulfillment-e2e
COPY --from=builder /app/target/release/fulfillment-e2e /usr/local/bin/fulfillment-e2e
ENTRYPOINT ["/usr/local/bin/fulfillment-e2e"]
