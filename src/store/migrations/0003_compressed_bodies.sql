-- Requests are stored lz4-compressed by the service: a simulator CHANNEL_ANSWER of 8.8 KB
-- becomes about 3.6 KB. SQLite writes each page twice (to the WAL, then to the database at a
-- checkpoint), and a request that fits in part of a page no longer spills into an overflow
-- page: 40 % fewer bytes written, about 10 % less CPU per event (BENCHMARKS.md, change 22).
-- `body` is kept for rows written before; new rows leave it empty.
ALTER TABLE delivery_payloads ADD COLUMN body_lz4 BLOB;
