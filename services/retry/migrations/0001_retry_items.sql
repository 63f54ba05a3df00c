-- The retry queue: the seed's retry_queue, plus tenant, idempotency, lease and cancellation.

CREATE TABLE retry_items (
    id                UUID PRIMARY KEY,
    tenant_id         UUID NOT NULL,
    user_id           TEXT,
    operation_type    TEXT NOT NULL CHECK (operation_type ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$'),
    payload           JSONB NOT NULL DEFAULT '{}'::jsonb,
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'processing', 'resolved', 'failed', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Enqueue allows 1..=100; RetryNow may raise it by one past an exhausted item's attempts.
    max_attempts      INTEGER NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    last_error        TEXT,
    next_retry_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    worker_id         TEXT,
    claimed_at        TIMESTAMPTZ,
    lease_expires_at  TIMESTAMPTZ,
    reference_id      TEXT,
    reference_table   TEXT,
    idempotency_key   TEXT,
    -- The Nats-Msg-Id an item arrived with, so a redelivered enqueue creates nothing new
    -- even outside JetStream's duplicate window.
    source_msg_id     TEXT UNIQUE,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at       TIMESTAMPTZ
);

-- One live item per idempotency key and tenant. Finished items (resolved, failed, and
-- cancelled, which is as final) free the key, so the same operation failing again later
-- is queued again.
CREATE UNIQUE INDEX retry_items_idempotency ON retry_items (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('pending', 'processing');
-- Claiming: only pending rows are indexed, so the index stays small however many
-- resolved rows pile up.
CREATE INDEX retry_items_due ON retry_items (next_retry_at) WHERE status = 'pending';
-- Rescue of expired leases.
CREATE INDEX retry_items_lease ON retry_items (lease_expires_at) WHERE status = 'processing';
-- The error-queue page: a tenant's items, newest first, optionally by status.
CREATE INDEX retry_items_tenant_created ON retry_items (tenant_id, created_at DESC, id DESC);
CREATE INDEX retry_items_tenant_status ON retry_items (tenant_id, status, created_at DESC, id DESC);

-- One row per attempt: when it started, how it ended.
CREATE TABLE retry_attempts (
    item_id      UUID NOT NULL REFERENCES retry_items (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    duration_ms  BIGINT,
    outcome      TEXT NOT NULL DEFAULT 'running'
                 CHECK (outcome IN ('running', 'succeeded', 'failed', 'permanent', 'lease_expired')),
    error        TEXT,
    worker_id    TEXT,
    PRIMARY KEY (item_id, attempt)
);
