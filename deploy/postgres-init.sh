#!/bin/sh
# Runs once, when the compose PostgreSQL volume is new (the image's docker-entrypoint-initdb.d).
# Three logins: the superuser (only this script uses it), fcfs_owner, which owns the database and
# so its schema (the `migrate` job), and fcfs_app, which the service runs as and which may only
# read and write rows: every table and sequence fcfs_owner creates is granted to it by default
# privileges. The passwords are read from their files by psql itself (so they are on no command
# line) and reach SQL as variables quoted by psql (:'name'), never pasted into a statement.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -v db="$POSTGRES_DB" <<'SQL'
\set owner_password `cat "$POSTGRES_OWNER_PASSWORD_FILE"`
\set app_password `cat "$POSTGRES_APP_PASSWORD_FILE"`
CREATE ROLE fcfs_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE fcfs_app LOGIN PASSWORD :'app_password';
ALTER DATABASE :"db" OWNER TO fcfs_owner;
-- PostgreSQL 15: public belongs to pg_database_owner, so to fcfs_owner from here on.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO fcfs_app;
GRANT USAGE ON SCHEMA public TO fcfs_app;
ALTER DEFAULT PRIVILEGES FOR ROLE fcfs_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO fcfs_app;
ALTER DEFAULT PRIVILEGES FOR ROLE fcfs_owner IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO fcfs_app;
SQL
