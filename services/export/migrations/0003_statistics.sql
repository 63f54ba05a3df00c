-- The daily product statistics (README, "Daily product statistics"): runs, their progress per
-- shop, the stored exports and the image backups.

CREATE TABLE statistics_runs (
    id            UUID PRIMARY KEY,
    -- The UTC day whose events are exported.
    day           DATE NOT NULL,
    -- daily: the once-a-day run (scheduler or cron), at most one per day; admin: triggered.
    kind          TEXT NOT NULL CHECK (kind IN ('daily', 'admin')),
    -- An admin run may be narrowed to one shop, product or variant.
    shop_domain   TEXT,
    product_id    TEXT,
    variant_id    TEXT,
    requested_by  TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    -- The replica working on it and its last sign of life; a stale heartbeat lets another
    -- replica take the run over and resume it.
    owner         TEXT NOT NULL,
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ,
    error         TEXT
);
-- Once per day however many replicas (and cron callers) try: the claim is this row.
CREATE UNIQUE INDEX statistics_runs_one_daily ON statistics_runs (day) WHERE kind = 'daily';
CREATE INDEX statistics_runs_running ON statistics_runs (heartbeat_at) WHERE status = 'running';
CREATE INDEX statistics_runs_started ON statistics_runs (started_at DESC, id DESC);

-- A run's progress in one shop: the cursor after the last finished page, and counts.
CREATE TABLE statistics_run_shops (
    run_id        UUID NOT NULL REFERENCES statistics_runs (id) ON DELETE CASCADE,
    shop_domain   TEXT NOT NULL,
    tenant_id     UUID NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    cursor        TEXT,
    products      INTEGER NOT NULL DEFAULT 0,
    variants      INTEGER NOT NULL DEFAULT 0,
    images        INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, shop_domain)
);

-- One row per variant and day; a rerun replaces it.
CREATE TABLE statistics_exports (
    id                   UUID PRIMARY KEY,
    tenant_id            UUID NOT NULL,
    shop_domain          TEXT NOT NULL,
    product_id           TEXT NOT NULL,
    variant_id           TEXT NOT NULL,
    shopify_product_id   TEXT NOT NULL,
    shopify_variant_id   TEXT NOT NULL,
    day                  DATE NOT NULL,
    csv_key              TEXT NOT NULL,
    json_key             TEXT NOT NULL,
    csv_url              TEXT NOT NULL,
    json_url             TEXT NOT NULL,
    metrics              JSONB NOT NULL,
    images               JSONB NOT NULL,
    -- The run that wrote it last (none for a manual export or a retry).
    run_id               UUID,
    exported_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (shop_domain, product_id, variant_id, day)
);
CREATE INDEX statistics_exports_run ON statistics_exports (run_id, shop_domain, product_id) WHERE run_id IS NOT NULL;
CREATE INDEX statistics_exports_variant ON statistics_exports (tenant_id, variant_id, day DESC);

-- Each image copied once per shop.
CREATE TABLE product_image_backups (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL,
    shop_domain   TEXT NOT NULL,
    product_id    TEXT NOT NULL,
    variant_id    TEXT NOT NULL,
    media_id      TEXT NOT NULL,
    shopify_url   TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    object_url    TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    bytes         BIGINT NOT NULL,
    run_id        UUID,
    backed_up_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (shop_domain, media_id)
);
