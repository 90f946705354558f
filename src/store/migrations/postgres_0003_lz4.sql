-- Requests are JSON of several KB: lz4 compresses them several times faster than PostgreSQL's
-- default pglz. Servers built without lz4 keep the default.
DO $$
BEGIN
    ALTER TABLE delivery_payloads ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE delivery_payloads ALTER COLUMN event SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 compression is not available; keeping the default';
END
$$;
