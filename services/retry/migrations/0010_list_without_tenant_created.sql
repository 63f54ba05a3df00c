-- Every claim and every result wrote an entry here too (no update of an item is HOT while
-- `status` is indexed). A tenant's newest items over every status are now read as the newest
-- of each status from `retry_items_tenant_status` (`Store::list`).
DROP INDEX retry_items_tenant_created;
