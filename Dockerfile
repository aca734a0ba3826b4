# syntax=docker/dockerfile:1
# turnout: a multi-stage build. The dependencies compile in a layer of their
# own (from the manifests and Cargo.lock alone), so a change to turnout's
# sources rebuilds only turnout. The image holds the stripped binary.

FROM rust:1-slim-bookworm AS build
# protoc and the well-known protos: the fleet's etcd client (--features etcd).
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# 1. Dependencies: the workspace's manifests with empty crates.
COPY Cargo.toml Cargo.lock ./
COPY config/Cargo.toml config/
COPY control/Cargo.toml control/
COPY proxy/Cargo.toml proxy/
COPY instances/Cargo.toml instances/
COPY tests/harness/Cargo.toml tests/harness/
COPY bench/Cargo.toml bench/
RUN for d in config control proxy instances tests/harness; do mkdir -p $d/src && touch $d/src/lib.rs; done \
    && mkdir -p src bench/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release --locked --features etcd --bin turnout \
    && rm -rf src bench/src config/src control/src proxy/src instances/src tests/harness/src
# 2. turnout itself.
COPY . .
RUN touch src/main.rs config/src/lib.rs control/src/lib.rs proxy/src/lib.rs instances/src/lib.rs tests/harness/src/lib.rs \
    && CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
       cargo build --release --locked --features etcd --bin turnout

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin turnout \
    && mkdir -p /etc/turnout /var/lib/turnout /run/turnout \
    && chown turnout:turnout /var/lib/turnout /run/turnout \
    && chmod 0750 /var/lib/turnout /run/turnout
COPY --from=build /src/target/release/turnout /usr/local/bin/turnout
COPY config/examples/turnout.toml /etc/turnout/turnout.toml.example
USER turnout
# Clients (listen.address) and Prometheus (metrics.address, with /healthz
# and /readyz); state, logs and reports go to /var/lib/turnout, the admin
# socket to /run/turnout.
EXPOSE 6432 9930
VOLUME ["/var/lib/turnout"]
# /healthz: the process is up (bash's /dev/tcp; the image has no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9930 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]
ENTRYPOINT ["/usr/local/bin/turnout"]
CMD ["run", "--config", "/etc/turnout/turnout.toml"]
