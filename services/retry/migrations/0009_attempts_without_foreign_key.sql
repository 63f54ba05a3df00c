-- The attempts' foreign key checked every inserted attempt with a query of its own (the
-- referential-integrity trigger: 5 % of PostgreSQL's time in a backlog). An attempt is only
-- ever written beside its item, with the item's row locked in the same transaction, and is
-- deleted with it (`Store::prune`), so the key guarded nothing the code does not.
ALTER TABLE retry_attempts DROP CONSTRAINT retry_attempts_item_id_fkey;
