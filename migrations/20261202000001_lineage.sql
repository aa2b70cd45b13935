-- What the Redis watcher must remember where a Redis restart cannot take it (ops::reconcile):
-- the highest position each event's gate was ever seen to hand out (positions up to it stay
-- taken after Redis loses state, so no place is told twice), and the identity of the Redis
-- server (lineage) the service last saw, per key prefix, so a restart while every instance was
-- down is noticed when they come back.
ALTER TABLE coupon
    ADD COLUMN admitted_high INTEGER NOT NULL DEFAULT 0 CHECK (admitted_high >= 0);

CREATE TABLE redis_lineage (
    key_prefix TEXT PRIMARY KEY,
    server     TEXT NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
