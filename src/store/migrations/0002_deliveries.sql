-- The delivery queue: one row per (event, hook), written in the transaction that accepts the
-- event. The state is kept apart from the request, so that leasing and recording rewrite a
-- small row, not a 10 KB one. Times are epoch ms.
CREATE TABLE deliveries (
    -- UUIDv7: time-ordered, so new rows go to the end of the index.
    id          TEXT PRIMARY KEY,
    hook_id     TEXT NOT NULL,
    domain      TEXT NOT NULL,
    event_name  TEXT NOT NULL,
    -- For hooks that deliver a call's events in order: the call (Unique-ID), and the event's
    -- place in it (Event-Sequence).
    order_key   TEXT,
    order_seq   BIGINT,
    status      TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    -- Attempts made before the last manual retry; the retry budget counts from here.
    retry_from  BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    lease_until BIGINT,
    lease_owner TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_hook ON deliveries (hook_id, created_at);
CREATE INDEX deliveries_finished ON deliveries (updated_at) WHERE status <> 'pending';
CREATE INDEX deliveries_ordered ON deliveries (hook_id, order_key, order_seq)
    WHERE status = 'pending' AND order_key IS NOT NULL;

-- The rendered request, so retries send the same bytes; deleted once delivered. `event` is
-- kept only for hooks whose headers need the auth pre-request's answer.
CREATE TABLE delivery_payloads (
    id      TEXT PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    method  TEXT NOT NULL,
    url     TEXT NOT NULL,
    headers TEXT NOT NULL,
    body    TEXT NOT NULL,
    event   TEXT
);

-- Every attempt, for the delivery log.
CREATE TABLE attempts (
    delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    n           BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status_code BIGINT,
    duration_ms BIGINT NOT NULL,
    error       TEXT,
    response    TEXT,
    PRIMARY KEY (delivery_id, n)
);

-- Events already taken from FreeSWITCH's event socket, by identity, so that two nodes reading
-- the same switch deliver each event once. Kept for an hour.
CREATE TABLE seen_events (
    core_uuid TEXT NOT NULL,
    sequence  BIGINT NOT NULL,
    seen_at   BIGINT NOT NULL,
    PRIMARY KEY (core_uuid, sequence)
);
CREATE INDEX seen_events_by_time ON seen_events (seen_at);
