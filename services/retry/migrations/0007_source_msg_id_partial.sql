-- Only items that came over the bus carry a message id. The unique constraint indexed every
-- item, NULL ids included (which never conflict), and since a claim or a result changes an
-- item's status, each of those updates wrote one more entry for it. A partial index keeps
-- the same uniqueness with entries only for items that have an id.
CREATE UNIQUE INDEX retry_items_tenant_source_msg_id ON retry_items (tenant_id, source_msg_id)
    WHERE source_msg_id IS NOT NULL;
ALTER TABLE retry_items DROP CONSTRAINT retry_items_tenant_source_msg_id_key;
