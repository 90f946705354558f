-- The hot path writes a request and an attempt for every delivery. Two costs of that are
-- PostgreSQL's, not the work's:
-- * A foreign key checks each inserted row against its delivery, and locks that row
--   (FOR KEY SHARE) which the attempt's outcome then rewrites. Pruning deletes the rows of a
--   delivery itself (Store::prune), so the keys are dropped.
-- * A request above 2 KB was compressed and still moved out of line into the TOAST table:
--   two more inserts, and two more deletes once delivered. Rows now stay in their page up to
--   its size; only larger ones are compressed first.
ALTER TABLE delivery_payloads DROP CONSTRAINT IF EXISTS delivery_payloads_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_delivery_id_fkey;
ALTER TABLE delivery_payloads SET (toast_tuple_target = 8160);
