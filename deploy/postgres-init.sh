#!/bin/sh
# Runs once, when the compose PostgreSQL volume is created: the login the service runs as may
# only read and write rows. The schema is the owner's (the `migrate` job); every table and
# sequence it creates is granted to the service by default privileges.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE fcfs_app LOGIN PASSWORD '${POSTGRES_APP_PASSWORD}';
GRANT CONNECT ON DATABASE "${POSTGRES_DB}" TO fcfs_app;
GRANT USAGE ON SCHEMA public TO fcfs_app;
ALTER DEFAULT PRIVILEGES FOR ROLE "${POSTGRES_USER}" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO fcfs_app;
ALTER DEFAULT PRIVILEGES FOR ROLE "${POSTGRES_USER}" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO fcfs_app;
SQL
