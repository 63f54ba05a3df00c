-- Lifecycle events wait here until JetStream has them: written in the transaction that
-- makes the transition, published and deleted by the relay after the bus acknowledged
-- them, so an event is never lost to a crash or an outage between commit and publish.
CREATE TABLE outbox (
    seq         BIGSERIAL PRIMARY KEY,
    subject     TEXT NOT NULL,
    -- Nats-Msg-Id: a republish after a crash is dropped by the bus as a repeat.
    msg_id      TEXT NOT NULL,
    payload     BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- An attempt whose item was cancelled while it ran ends as `cancelled`, not `running`.
ALTER TABLE retry_attempts DROP CONSTRAINT retry_attempts_outcome_check;
ALTER TABLE retry_attempts ADD CONSTRAINT retry_attempts_outcome_check
    CHECK (outcome IN ('running', 'succeeded', 'failed', 'permanent', 'lease_expired', 'cancelled'));
