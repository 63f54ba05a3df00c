-- One row per export, written when it ends however it ends.
CREATE TABLE export_history (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL,
    user_id       TEXT NOT NULL,
    export_type   TEXT NOT NULL,
    format        TEXT NOT NULL CHECK (format IN ('csv', 'json', 'ndjson', 'rows')),
    fields        TEXT[] NOT NULL,
    range_start   TIMESTAMPTZ NOT NULL,
    range_end     TIMESTAMPTZ NOT NULL,
    row_limit     BIGINT NOT NULL,
    record_count  BIGINT NOT NULL DEFAULT 0,
    bytes         BIGINT NOT NULL DEFAULT 0,
    duration_ms   BIGINT NOT NULL DEFAULT 0,
    status        TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
    error         TEXT,
    truncated     BOOLEAN NOT NULL DEFAULT false,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX export_history_tenant_created ON export_history (tenant_id, created_at DESC, id DESC);
