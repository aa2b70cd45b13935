# The service's image, compiled in the Rust toolchain's image, on BASE_IMAGE. Where no image
# registry answers, docker-compose.offline.yml builds deploy/offline/app.Dockerfile instead: the
# same runtime with the binary the host built.
ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS build
# cmake builds the bundled librdkafka; curl's header is needed by its CMake build (see scripts/lib.sh).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
# A workspace member; only the service is built.
COPY bench bench
RUN cargo build --release --locked -p fcfs-coupon

FROM ${BASE_IMAGE}
# libssl3: librdkafka speaks TLS to brokers; curl: the health check. Keep in step with
# deploy/offline/app.Dockerfile.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home fcfs
COPY --from=build /src/target/release/fcfs-coupon /usr/local/bin/fcfs-coupon
USER fcfs
EXPOSE 8080 9100
ENTRYPOINT ["fcfs-coupon"]
CMD ["serve"]
