-- With statistics taken while the queue was empty, the claim found the next tenant by reading
-- this index whole and sorting by tenant (57,561 entries, 113 ms, in a steady stream of
-- enqueues), where `retry_items_tenant_due` gives tenants in order. Without it every part of
-- the claim, and the look at the next due time (`Store::next_due_in`), can only take the
-- tenant-first index, and each enqueue writes one index entry less.
DROP INDEX retry_items_due;
