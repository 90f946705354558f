-- Requests as the service compresses them (one lz4 block, its length first); see
-- Dialect::COMPRESS_BODIES. `body` keeps the text of rows written before; new rows leave it
-- empty.
ALTER TABLE delivery_payloads ADD COLUMN body_lz4 BLOB;
