-- Verifiable fairness (src/fairness): one append-only Merkle log per event, its leaves the
-- event's admissions in position order. Written only by the log builder, under the row lock
-- of the event's `fairness_log` row, so leaves are appended once, densely and in order.

-- The head of each event's log: its size, root and latest signed checkpoint.
CREATE TABLE fairness_log (
    coupon_id  BIGINT      PRIMARY KEY REFERENCES coupon (id),
    size       BIGINT      NOT NULL DEFAULT 0 CHECK (size >= 0),
    root       BYTEA,
    checkpoint TEXT,
    -- The event is over and every position it handed out has its leaf.
    complete   BOOLEAN     NOT NULL DEFAULT false,
    signed_at  TIMESTAMPTZ
);

-- One leaf per position. `leaf` is the canonical byte string that is hashed (see README,
-- "Verifiable fairness"); the nonce opens the leaf's commitment to its user and is shown only
-- to that user (the position answer's receipt) and to the audit. `hashes` are the tree's
-- stored hashes this leaf's append completed (Go's sumdb/tlog: the leaf hash, then one per
-- subtree it closed, 32 bytes each, two on average), so a proof reads O(log n) rows and an
-- append writes one row per leaf.
CREATE TABLE fairness_leaf (
    coupon_id   BIGINT      NOT NULL REFERENCES coupon (id),
    position    INTEGER     NOT NULL CHECK (position > 0),
    leaf        BYTEA       NOT NULL,
    nonce       BYTEA,
    hashes      BYTEA       NOT NULL CHECK (length(hashes) >= 32 AND length(hashes) % 32 = 0),
    appended_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (coupon_id, position)
);
