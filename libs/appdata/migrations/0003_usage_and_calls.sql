-- AI usage for the billing export (platform admins, across tenants), and the voice agents'
-- call logs behind each brand's analytics report. Children name their tenant in their
-- foreign keys, as in 0002, so a row can only point at a parent of its own tenant.

CREATE TABLE usage_events (
    id             UUID PRIMARY KEY,
    tenant_id      UUID NOT NULL REFERENCES tenants (id),
    model          TEXT NOT NULL,
    input_tokens   BIGINT NOT NULL CHECK (input_tokens >= 0),
    output_tokens  BIGINT NOT NULL CHECK (output_tokens >= 0),
    cost_cents     BIGINT NOT NULL CHECK (cost_cents >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The billing export reads a date range across every tenant, oldest first.
CREATE INDEX usage_events_created ON usage_events (created_at);
CREATE INDEX usage_events_tenant_created ON usage_events (tenant_id, created_at DESC);

CREATE TABLE brands (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL,
    company_name  TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);
CREATE INDEX brands_tenant_created ON brands (tenant_id, created_at DESC);

CREATE TABLE personas (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    brand_id    UUID NOT NULL,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, brand_id) REFERENCES brands (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX personas_brand ON personas (brand_id);

CREATE TABLE agents (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    persona_id  UUID NOT NULL,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, persona_id) REFERENCES personas (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agents_persona ON agents (persona_id);

-- Phone numbers are kept for the call history but never exported.
CREATE TABLE call_logs (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL,
    agent_id      UUID NOT NULL,
    outcome       TEXT NOT NULL,
    duration_s    INTEGER NOT NULL CHECK (duration_s >= 0),
    cost          NUMERIC(12, 4) NOT NULL DEFAULT 0,
    phone_number  TEXT,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX call_logs_agent_started ON call_logs (agent_id, started_at);
CREATE INDEX call_logs_tenant_started ON call_logs (tenant_id, started_at DESC);

-- A brand's calls as reports read them: with the brand, without the caller's phone number.
CREATE VIEW brand_calls AS
SELECT c.id, c.tenant_id, p.brand_id, c.agent_id, c.outcome, c.duration_s, c.cost, c.started_at
FROM call_logs c
JOIN agents a ON a.tenant_id = c.tenant_id AND a.id = c.agent_id
JOIN personas p ON p.tenant_id = a.tenant_id AND p.id = a.persona_id;
