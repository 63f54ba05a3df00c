-- Counts per tenant, operation type and status, kept up to date so that the error page's
-- counts and the per-type stats read a few rows instead of every item of a tenant.
--
-- Writers never update a shared counter row (that would serialise every claim and result of
-- a tenant on one row lock): each statement appends its net change to item_count_deltas,
-- and a background fold moves the deltas into item_counts every few seconds. Readers add the
-- two, which in one snapshot is exact.

CREATE TABLE item_counts (
    tenant_id       UUID NOT NULL,
    operation_type  TEXT NOT NULL,
    status          TEXT NOT NULL,
    n               BIGINT NOT NULL,
    -- Attempts summed over these items.
    attempts        BIGINT NOT NULL,
    -- The error of the most recently changed item among them that has one, and when.
    last_error      TEXT,
    last_error_at   TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, operation_type, status)
);

CREATE TABLE item_count_deltas (
    tenant_id       UUID NOT NULL,
    operation_type  TEXT NOT NULL,
    status          TEXT NOT NULL,
    n               BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    last_error      TEXT,
    last_error_at   TIMESTAMPTZ
);

CREATE FUNCTION count_inserted_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retry.item_count_deltas
    SELECT tenant_id, operation_type, status, count(*), sum(attempts),
           (array_agg(last_error ORDER BY updated_at DESC) FILTER (WHERE last_error IS NOT NULL))[1],
           max(updated_at) FILTER (WHERE last_error IS NOT NULL)
    FROM new_items GROUP BY tenant_id, operation_type, status;
    RETURN NULL;
END $$;

CREATE FUNCTION count_updated_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retry.item_count_deltas
    SELECT tenant_id, operation_type, status, sum(n), sum(attempts),
           (array_agg(last_error ORDER BY updated_at DESC) FILTER (WHERE last_error IS NOT NULL))[1],
           max(updated_at) FILTER (WHERE last_error IS NOT NULL)
    FROM (
        SELECT tenant_id, operation_type, status, 1 AS n, attempts, last_error, updated_at
        FROM new_items
        UNION ALL
        SELECT tenant_id, operation_type, status, -1, -attempts, NULL, NULL
        FROM old_items
    ) changes
    GROUP BY tenant_id, operation_type, status
    HAVING sum(n) <> 0 OR sum(attempts) <> 0 OR bool_or(last_error IS NOT NULL);
    RETURN NULL;
END $$;

CREATE FUNCTION count_deleted_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retry.item_count_deltas
    SELECT tenant_id, operation_type, status, -count(*), -sum(attempts), NULL, NULL
    FROM old_items GROUP BY tenant_id, operation_type, status;
    RETURN NULL;
END $$;

-- The triggers come first: creating them waits for writers in flight and holds new ones
-- back until this migration commits, so the snapshot below misses no change.
CREATE TRIGGER retry_items_count_insert AFTER INSERT ON retry_items
    REFERENCING NEW TABLE AS new_items FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_items();
CREATE TRIGGER retry_items_count_update AFTER UPDATE ON retry_items
    REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION count_updated_items();
CREATE TRIGGER retry_items_count_delete AFTER DELETE ON retry_items
    REFERENCING OLD TABLE AS old_items FOR EACH STATEMENT EXECUTE FUNCTION count_deleted_items();

INSERT INTO item_counts
SELECT tenant_id, operation_type, status, count(*), sum(attempts),
       (array_agg(last_error ORDER BY updated_at DESC) FILTER (WHERE last_error IS NOT NULL))[1],
       max(updated_at) FILTER (WHERE last_error IS NOT NULL)
FROM retry_items GROUP BY tenant_id, operation_type, status;
