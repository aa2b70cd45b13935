-- The durable end of the pipeline. Redis decides who gets in; these constraints make sure that,
-- whatever happens upstream, no coupon is issued twice and never beyond the stock.

CREATE TABLE coupon (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    stock        INTEGER     NOT NULL CHECK (stock > 0),
    issued_count INTEGER     NOT NULL DEFAULT 0,
    opens_at     TIMESTAMPTZ,
    closes_at    TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT coupon_issued_within_stock CHECK (issued_count BETWEEN 0 AND stock),
    CONSTRAINT coupon_window_ordered CHECK (opens_at IS NULL OR closes_at IS NULL OR closes_at > opens_at)
);

CREATE TABLE coupon_issue (
    coupon_id  BIGINT      NOT NULL REFERENCES coupon (id),
    user_id    BIGINT      NOT NULL CHECK (user_id > 0),
    position   INTEGER     NOT NULL CHECK (position > 0),
    applied_at TIMESTAMPTZ NOT NULL,
    issued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT coupon_issue_pkey PRIMARY KEY (coupon_id, user_id),
    CONSTRAINT coupon_issue_position_key UNIQUE (coupon_id, position)
);

-- GET /me/coupons: one user's coupons, newest first.
CREATE INDEX coupon_issue_user_idx ON coupon_issue (user_id, issued_at DESC);

-- Messages that can never be persisted, kept for a person to look at.
CREATE TABLE failed_event (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      TEXT        NOT NULL,
    partition  INTEGER     NOT NULL,
    "offset"   BIGINT      NOT NULL,
    key        TEXT,
    payload    BYTEA,
    error      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A redelivered poison message is recorded once.
    CONSTRAINT failed_event_source_key UNIQUE (topic, partition, "offset")
);
