# Multi-stage build of fcfs-coupon. No Docker engine runs on the development machines of this
# project; docker-compose.yml is validated with `docker-compose config` by scripts/test.sh.
FROM rust:1-bookworm AS build
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

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home fcfs
COPY --from=build /src/target/release/fcfs-coupon /usr/local/bin/fcfs-coupon
USER fcfs
EXPOSE 8080 9100
ENTRYPOINT ["fcfs-coupon"]
CMD ["serve"]
