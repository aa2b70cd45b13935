# The Kafka-protocol broker the project's scripts run (Tansu, built from crates.io into
# ~/.cargo/bin by scripts/services.sh), standing in for Apache Kafka in the offline stack only:
# no Kafka image or JVM distribution is reachable on such machines. sqlite storage, as locally.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
COPY .compose/bin/tansu /usr/local/bin/tansu
RUN useradd --system --create-home broker && mkdir -p /var/lib/kafka/data \
 && chown broker /var/lib/kafka/data
USER broker
WORKDIR /var/lib/kafka/data
EXPOSE 9092
ENTRYPOINT ["tansu", "broker", "--storage-engine", "sqlite://tansu.db", \
            "--listener-url", "tcp://0.0.0.0:9092", "--advertised-listener-url", "tcp://kafka:9092"]
