-- Storefront A/B test events, from which the daily product statistics are computed (README,
-- "Daily product statistics"): one row per impression, add to cart or order of a product
-- variant in a tenant's Shopify shop. Product and variant ids are Shopify's numeric ids.

CREATE TABLE ab_test_events (
    id           UUID PRIMARY KEY,
    tenant_id    UUID NOT NULL REFERENCES tenants (id),
    shop_domain  TEXT NOT NULL,
    product_id   TEXT NOT NULL,
    variant_id   TEXT NOT NULL,
    event_type   TEXT NOT NULL CHECK (event_type IN ('impression', 'add_to_cart', 'order')),
    -- In the shop's currency; only orders carry revenue.
    revenue      NUMERIC(14, 2) NOT NULL DEFAULT 0 CHECK (revenue >= 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The daily run sums one UTC day of one shop for a page of products at a time.
CREATE INDEX ab_test_events_shop_product_created
    ON ab_test_events (tenant_id, shop_domain, product_id, created_at)
    INCLUDE (variant_id, event_type, revenue);
