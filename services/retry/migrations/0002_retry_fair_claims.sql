-- Fair claiming: the claim walks the tenants with pending items (a skip scan over this
-- index's leading column) and takes their due items in turn, so one tenant's backlog cannot
-- hold back another tenant's due item.
CREATE INDEX retry_items_tenant_due ON retry_items (tenant_id, next_retry_at) WHERE status = 'pending';
