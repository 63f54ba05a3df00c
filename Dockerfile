# syntax=docker/dockerfile:1
#
# One image for the whole Haven backbone: the four services and havenctl.
# The binary to run is chosen by the container command, e.g.
#   docker run --rm ghcr.io/haven/backbone haven-retry
# (docker-compose.yml and deploy/k8s/ do exactly that).
#
# Build:  docker build -t ghcr.io/haven/backbone:dev .

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- builder ---
FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# Protobuf codegen is pure Rust (protox): no protoc needed.
# SQLX_OFFLINE: compile-time-checked queries (if any) use the committed .sqlx/
# metadata instead of reaching for a database during the image build.
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    SQLX_OFFLINE=true

COPY . .

# Cache mounts keep the registry and target/ across builds (BuildKit). target/
# lives in a cache mount, so the binaries are copied out within the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && for bin in haven-integrations haven-retry haven-export haven-gateway havenctl haven-fake-providers; do \
        cp "target/release/${bin}" /out/ ; \
    done

# ---------------------------------------------------------------- runtime ---
FROM ${RUNTIME_IMAGE} AS runtime

# ca-certificates: TLS to providers (Shopify, Pinterest, Klaviyo, ...), S3/R2.
# tini: PID 1 that forwards SIGTERM (the services drain on it) and reaps.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

# Fixed numeric uid/gid so Kubernetes runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 haven \
 && useradd --system --uid 10001 --gid haven --home-dir /var/lib/haven \
            --no-create-home --shell /usr/sbin/nologin haven \
 && mkdir -p /var/lib/haven/exports \
 && chown -R haven:haven /var/lib/haven

COPY --from=builder /out/ /usr/local/bin/

# Container defaults: listen on all interfaces (the binaries default to
# 127.0.0.1), structured logs. Everything can be overridden at run time.
ENV HAVEN_LOG=info \
    HAVEN_LOG_FORMAT=json \
    HAVEN_INTEGRATIONS_ADDR=0.0.0.0:50051 \
    HAVEN_RETRY_ADDR=0.0.0.0:50052 \
    HAVEN_EXPORT_ADDR=0.0.0.0:50053 \
    HAVEN_GATEWAY_ADDR=0.0.0.0:8080 \
    HAVEN_INTEGRATIONS_METRICS_ADDR=0.0.0.0:9151 \
    HAVEN_RETRY_METRICS_ADDR=0.0.0.0:9152 \
    HAVEN_EXPORT_METRICS_ADDR=0.0.0.0:9153 \
    HAVEN_OBJECT_STORE_URL=file:///var/lib/haven/exports

# gateway HTTP; integrations, retry, export gRPC; their /metrics ports.
EXPOSE 8080 50051 50052 50053 9151 9152 9153

USER 10001:10001
WORKDIR /var/lib/haven

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["havenctl", "--help"]
