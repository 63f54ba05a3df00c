-- A bus message id is unique within its tenant, not across tenants: one tenant reusing an
-- id another tenant used must still be queued.
ALTER TABLE retry_items DROP CONSTRAINT retry_items_source_msg_id_key;
ALTER TABLE retry_items ADD CONSTRAINT retry_items_tenant_source_msg_id_key UNIQUE (tenant_id, source_msg_id);
