# Build stage: compile the release binary.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin turnout

# Runtime stage: the binary alone on a slim base.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home turnout
COPY --from=build /src/target/release/turnout /usr/local/bin/turnout
USER turnout
EXPOSE 6432
ENTRYPOINT ["/usr/local/bin/turnout"]
CMD ["run", "--config", "/etc/turnout/turnout.toml"]
