-- The platform's own data that exports read. Every tenant row carries tenant_id, and every
-- exported table is indexed by (tenant_id, created_at DESC): exports are newest first.

CREATE TABLE tenants (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE leads (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    email           TEXT NOT NULL,
    segment         TEXT,
    source          TEXT,
    quiz_completed  BOOLEAN NOT NULL DEFAULT false,
    converted       BOOLEAN NOT NULL DEFAULT false,
    utm_source      TEXT,
    utm_medium      TEXT,
    utm_campaign    TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX leads_tenant_created ON leads (tenant_id, created_at DESC);

CREATE TABLE customers (
    id                   UUID PRIMARY KEY,
    tenant_id            UUID NOT NULL,
    email                TEXT NOT NULL,
    shopify_customer_id  TEXT,
    segment              TEXT,
    order_count          INTEGER NOT NULL DEFAULT 0,
    total_spent          NUMERIC(12, 2) NOT NULL DEFAULT 0,
    first_order_at       TIMESTAMPTZ,
    last_order_at        TIMESTAMPTZ,
    journey_stage        TEXT,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX customers_tenant_created ON customers (tenant_id, created_at DESC);

CREATE TABLE customer_loyalty (
    customer_id      UUID PRIMARY KEY REFERENCES customers (id) ON DELETE CASCADE,
    tenant_id        UUID NOT NULL,
    tier             TEXT NOT NULL,
    lifetime_points  INTEGER NOT NULL DEFAULT 0,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE customer_orders (
    id                   UUID PRIMARY KEY,
    tenant_id            UUID NOT NULL,
    customer_id          UUID,
    shopify_order_id     TEXT,
    customer_email       TEXT,
    total                NUMERIC(12, 2) NOT NULL,
    subtotal             NUMERIC(12, 2) NOT NULL,
    discount_total       NUMERIC(12, 2) NOT NULL DEFAULT 0,
    item_count           INTEGER NOT NULL,
    status               TEXT NOT NULL,
    attribution_channel  TEXT,
    coupon_code          TEXT,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX customer_orders_tenant_created ON customer_orders (tenant_id, created_at DESC);

CREATE TABLE boards (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL,
    name                TEXT NOT NULL,
    pinterest_board_id  TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX boards_tenant ON boards (tenant_id);

CREATE TABLE pins (
    id                UUID PRIMARY KEY,
    tenant_id         UUID NOT NULL,
    board_id          UUID REFERENCES boards (id) ON DELETE SET NULL,
    title             TEXT NOT NULL,
    status            TEXT NOT NULL,
    link              TEXT,
    pinterest_pin_id  TEXT,
    published_at      TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX pins_tenant_created ON pins (tenant_id, created_at DESC);

-- Lifetime totals per pin, refreshed from Pinterest.
CREATE TABLE pin_analytics (
    pin_id       UUID PRIMARY KEY REFERENCES pins (id) ON DELETE CASCADE,
    tenant_id    UUID NOT NULL,
    impressions  BIGINT NOT NULL DEFAULT 0,
    saves        BIGINT NOT NULL DEFAULT 0,
    clicks       BIGINT NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE quotes (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL,
    text         TEXT NOT NULL,
    attribution  TEXT,
    collection   TEXT,
    mood         TEXT,
    status       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX quotes_tenant_created ON quotes (tenant_id, created_at DESC);

CREATE TABLE assets (
    id             UUID PRIMARY KEY,
    tenant_id      UUID NOT NULL,
    quote_id       UUID REFERENCES quotes (id) ON DELETE SET NULL,
    format         TEXT NOT NULL,
    status         TEXT NOT NULL,
    quality_score  NUMERIC(5, 2),
    url            TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX assets_tenant_created ON assets (tenant_id, created_at DESC);
CREATE INDEX assets_quote ON assets (quote_id);

CREATE TABLE daily_metrics (
    tenant_id         UUID NOT NULL,
    date              DATE NOT NULL,
    revenue           NUMERIC(14, 2) NOT NULL DEFAULT 0,
    orders            INTEGER NOT NULL DEFAULT 0,
    new_customers     INTEGER NOT NULL DEFAULT 0,
    new_leads         INTEGER NOT NULL DEFAULT 0,
    quiz_completions  INTEGER NOT NULL DEFAULT 0,
    pin_impressions   BIGINT NOT NULL DEFAULT 0,
    pin_clicks        BIGINT NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, date)
);
CREATE INDEX daily_metrics_tenant_date ON daily_metrics (tenant_id, date DESC);
