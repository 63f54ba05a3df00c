-- Leases held per tenant, from the maintained counts (folded and not yet folded, exact in
-- one snapshot): what the claim's in-flight caps and the dispatcher's capacity check read,
-- written once here rather than in each query.
CREATE VIEW leases_held AS
SELECT tenant_id, sum(n)::bigint AS n FROM (
    SELECT tenant_id, n FROM item_counts WHERE status = 'processing'
    UNION ALL
    SELECT tenant_id, n FROM item_count_deltas WHERE status = 'processing'
) c GROUP BY tenant_id;
