-- Rehearsal events (`fcfs-bench rehearse`): a drop rehearsed on the real deployment. Flagged
-- at creation and never changed: they are left out of the public list, only rehearsal users'
-- tokens (APP_AUTH__REHEARSAL_SECRET) may apply to them, their rows are theirs (a rehearsal
-- user's coupons are never listed to a real user of the same id, nor the other way round),
-- and `DELETE /coupons/{id}` removes them with everything they wrote.
ALTER TABLE coupon
    ADD COLUMN rehearsal BOOLEAN NOT NULL DEFAULT false;
