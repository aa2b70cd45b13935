-- Retention (APP_REDIS__RETENTION_SECS): once an event is finished and fully persisted, its
-- Redis keys are set to expire and its reads come from here. `applications` keeps the count
-- the dashboard showed, which lived only in Redis.
ALTER TABLE coupon
    ADD COLUMN retired_at   TIMESTAMPTZ,
    ADD COLUMN applications BIGINT CHECK (applications >= 0);
