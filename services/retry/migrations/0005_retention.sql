-- Finds what retention may delete (resolved and cancelled, oldest change first) without
-- reading the rest; failed items are kept until someone acts on them.
CREATE INDEX retry_items_finished ON retry_items (updated_at) WHERE status IN ('resolved', 'cancelled');
