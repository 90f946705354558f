-- Settings the service keeps for itself (the generated token secret).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Issued access tokens, by id, so they can be listed and revoked. Times are epoch ms.
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    domain     TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Hook documents as JSON text (key order kept); domain, event and enabled are copied out
-- for filtering.
CREATE TABLE hooks (
    id         TEXT PRIMARY KEY,
    domain     TEXT NOT NULL,
    event      TEXT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    doc        TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX hooks_by_domain ON hooks (domain, created_at, id);
