-- Seed 001's remaining integration state (README, "Integrations").

-- The tenant's Pinterest boards, synced at connect and after token refreshes (at most hourly);
-- boards gone from Pinterest are deleted.
CREATE TABLE pinterest_boards (
    tenant_id  UUID NOT NULL,
    board_id   TEXT NOT NULL,
    name       TEXT NOT NULL,
    pin_count  BIGINT NOT NULL DEFAULT 0,
    synced_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, board_id)
);
ALTER TABLE integrations ADD COLUMN boards_synced_at TIMESTAMPTZ;

-- What changed on a tenant's integrations, written in the transaction of the change.
CREATE TABLE activity (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL,
    user_id    TEXT,
    action     TEXT NOT NULL CHECK (action IN ('integration_connected', 'integration_disconnected',
                 'integration_connect_failed', 'token_refresh_failed', 'app_uninstalled',
                 'connection_abandoned')),
    provider   TEXT NOT NULL,
    details    JSONB NOT NULL DEFAULT '{}',
    at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX activity_tenant_at ON activity (tenant_id, at DESC, id DESC);

-- Seed 001's SetupProgress keys outside the wizard's six steps.
ALTER TABLE setup_progress DROP CONSTRAINT setup_progress_step_check;
ALTER TABLE setup_progress ADD CONSTRAINT setup_progress_step_check CHECK (step IN
    ('shopify', 'pinterest', 'klaviyo', 'dynamic_mockups', 'resend', 'design_rules',
     'operator_mode', 'import'));

-- The status a connection had before an OAuth attempt made it `connecting`, restored when
-- the attempt is abandoned (its state expires unused).
ALTER TABLE integrations ADD COLUMN status_before_connecting TEXT CHECK (status_before_connecting IN
    ('disconnected', 'connected', 'error', 'expired'));
