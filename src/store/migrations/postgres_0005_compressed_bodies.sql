-- The column SQLite keeps compressed requests in (0003_compressed_bodies.sql), so that both
-- stores share their SQL. PostgreSQL leaves it NULL and keeps `body`, which it compresses
-- itself (postgres_0003); see Dialect::COMPRESS_BODIES.
ALTER TABLE delivery_payloads ADD COLUMN body_lz4 BYTEA;
