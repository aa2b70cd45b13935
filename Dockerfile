# The service's image, two ways to one runtime stage:
#   docker build .                     compiles in the Rust toolchain's image (where a registry answers)
#   docker build --target prebuilt .   copies target/release/fcfs-coupon, built on the host: for
#                                      machines no image registry answers (scripts/compose.sh,
#                                      docker-compose.offline.yml); build it on a glibc no newer
#                                      than the base image's
# BASE_IMAGE is the runtime's base either way; scripts/compose.sh makes one with mmdebstrap
# where debian:bookworm-slim cannot be pulled.
ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

FROM ${BASE_IMAGE} AS runtime
# libssl3: librdkafka speaks TLS to brokers; curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home fcfs
USER fcfs
EXPOSE 8080 9100
ENTRYPOINT ["fcfs-coupon"]
CMD ["serve"]

# Before the compiling stage on purpose: the classic builder runs every stage up to --target.
FROM runtime AS prebuilt
COPY target/release/fcfs-coupon /usr/local/bin/fcfs-coupon

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

FROM runtime
COPY --from=build /src/target/release/fcfs-coupon /usr/local/bin/fcfs-coupon
