-- The column SQLite stores compressed requests in (0003_compressed_bodies.sql), so that both
-- stores share their SQL. PostgreSQL leaves it NULL and keeps `body`: it compresses requests
-- itself (lz4, postgres_0003), and the service compressing them instead measured 8 % fewer
-- webhooks/s (BENCHMARKS.md, change 22).
ALTER TABLE delivery_payloads ADD COLUMN body_lz4 BYTEA;
