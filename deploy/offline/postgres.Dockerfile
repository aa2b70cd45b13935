# PostgreSQL 15 from Debian's packages, for the offline stack (docker-compose.offline.yml). Its
# entrypoint does what the official image's does with the same variables (POSTGRES_USER,
# POSTGRES_DB, POSTGRES_PASSWORD_FILE, /docker-entrypoint-initdb.d/*.sh), so one compose file
# serves both.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY deploy/offline/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint"]
