-- A child row can only point at a parent of its own tenant: each parent gets a unique key on
-- (tenant_id, id) and each foreign key names the tenant too. The export catalogue's joins
-- match on the tenant as well, so neither alone stands between two tenants' data.
ALTER TABLE customers ADD CONSTRAINT customers_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE boards ADD CONSTRAINT boards_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE pins ADD CONSTRAINT pins_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE quotes ADD CONSTRAINT quotes_tenant_id_id_key UNIQUE (tenant_id, id);

ALTER TABLE customer_loyalty
    DROP CONSTRAINT customer_loyalty_customer_id_fkey,
    ADD CONSTRAINT customer_loyalty_customer_id_fkey FOREIGN KEY (tenant_id, customer_id)
        REFERENCES customers (tenant_id, id) ON DELETE CASCADE;
-- SET NULL on the reference only: the row keeps its tenant (PostgreSQL 15 or later).
ALTER TABLE pins
    DROP CONSTRAINT pins_board_id_fkey,
    ADD CONSTRAINT pins_board_id_fkey FOREIGN KEY (tenant_id, board_id)
        REFERENCES boards (tenant_id, id) ON DELETE SET NULL (board_id);
ALTER TABLE pin_analytics
    DROP CONSTRAINT pin_analytics_pin_id_fkey,
    ADD CONSTRAINT pin_analytics_pin_id_fkey FOREIGN KEY (tenant_id, pin_id)
        REFERENCES pins (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE assets
    DROP CONSTRAINT assets_quote_id_fkey,
    ADD CONSTRAINT assets_quote_id_fkey FOREIGN KEY (tenant_id, quote_id)
        REFERENCES quotes (tenant_id, id) ON DELETE SET NULL (quote_id);
