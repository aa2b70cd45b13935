# The service's image for the offline stack: Dockerfile's runtime, with the binary the host built
# (scripts/compose.sh runs `cargo build --release` first, on a glibc no newer than the base's)
# in place of a compile in the Rust toolchain's image, which no registry serves here. A file of
# its own because the classic builder runs every stage of a Dockerfile up to its target, so a
# stage copying a binary that may not exist cannot live beside the compiling one.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home fcfs
COPY target/release/fcfs-coupon /usr/local/bin/fcfs-coupon
USER fcfs
EXPOSE 8080 9100
ENTRYPOINT ["fcfs-coupon"]
CMD ["serve"]
