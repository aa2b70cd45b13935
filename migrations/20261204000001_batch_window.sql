-- Batched admission (APP_GATE__BATCH_WINDOW_US): the window the event was created under.
-- Applications that arrived this close together may have been decided out of arrival order
-- (README, Guarantees), so each checkpoint of the event's fairness log signs it for verifiers.
-- Events created before batching existed were decided one application per call: 0.
ALTER TABLE coupon
    ADD COLUMN batch_window_us INTEGER NOT NULL DEFAULT 0 CHECK (batch_window_us >= 0);
