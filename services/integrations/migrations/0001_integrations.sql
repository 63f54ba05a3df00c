-- A tenant's connection to one provider: public state only, never a secret.
CREATE TABLE integrations (
    id                 UUID PRIMARY KEY,
    tenant_id          UUID NOT NULL,
    provider           TEXT NOT NULL CHECK (provider IN
                         ('shopify', 'pinterest', 'klaviyo', 'dynamic_mockups', 'resend', 'sky_pilot')),
    status             TEXT NOT NULL DEFAULT 'disconnected' CHECK (status IN
                         ('disconnected', 'connecting', 'connected', 'error', 'expired')),
    -- Public account details per provider (shop_domain, shop_name, account_name, ...).
    metadata           JSONB NOT NULL DEFAULT '{}',
    scopes             TEXT[] NOT NULL DEFAULT '{}',
    -- Shopify only: the *.myshopify.com domain, which incoming webhooks are keyed by.
    shop_domain        TEXT,
    last_error         TEXT,
    last_error_at      TIMESTAMPTZ,
    token_expires_at   TIMESTAMPTZ,
    last_refreshed_at  TIMESTAMPTZ,
    connected_at       TIMESTAMPTZ,
    disconnected_at    TIMESTAMPTZ,
    -- Who connected it last, for events and audit.
    connected_by       TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, provider)
);
CREATE INDEX integrations_expiring ON integrations (token_expires_at)
    WHERE status = 'connected' AND token_expires_at IS NOT NULL;
CREATE INDEX integrations_shop ON integrations (shop_domain) WHERE shop_domain IS NOT NULL;

-- Secrets, sealed by the vault: AES-256-GCM under key `key_id`, with associated data binding
-- tenant, provider and kind, so a row copied to another owner does not decrypt.
CREATE TABLE credentials (
    integration_id  UUID NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    tenant_id       UUID NOT NULL,
    provider        TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('access_token', 'refresh_token', 'api_key')),
    key_id          TEXT NOT NULL,
    nonce           BYTEA NOT NULL CHECK (length(nonce) = 12),
    ciphertext      BYTEA NOT NULL,
    expires_at      TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, kind)
);
CREATE INDEX credentials_key ON credentials (key_id);

-- OAuth states: stored as SHA-256 hashes, single use, short-lived.
CREATE TABLE oauth_states (
    state_hash      BYTEA PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    user_id         TEXT NOT NULL,
    provider        TEXT NOT NULL,
    shop_domain     TEXT,
    redirect_uri    TEXT NOT NULL,
    -- PKCE verifier, sealed like a credential (kind pkce_verifier).
    verifier_key_id TEXT,
    verifier_nonce  BYTEA,
    verifier_ciphertext BYTEA,
    expires_at      TIMESTAMPTZ NOT NULL,
    consumed_at     TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX oauth_states_expires ON oauth_states (expires_at);

-- Webhook subscriptions registered with a tenant's shop.
CREATE TABLE shopify_webhooks (
    id                  UUID PRIMARY KEY,
    integration_id      UUID NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    tenant_id           UUID NOT NULL,
    topic               TEXT NOT NULL,
    address             TEXT NOT NULL,
    shopify_webhook_id  TEXT,
    -- registered, pending (handed to the retry queue) or deregistering.
    status              TEXT NOT NULL CHECK (status IN ('pending', 'registered', 'deregistering')),
    last_error          TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (integration_id, topic)
);

-- The setup wizard: one row per step the tenant has touched; missing rows are pending.
CREATE TABLE setup_progress (
    tenant_id   UUID NOT NULL,
    step        TEXT NOT NULL CHECK (step IN
                  ('shopify', 'pinterest', 'klaviyo', 'dynamic_mockups', 'design_rules', 'operator_mode')),
    status      TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'skipped')),
    updated_by  TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, step)
);
