-- Scheduled exports (README, "Scheduled exports"): seed 001's scheduled_exports with a time
-- of day, a time zone and the day it runs, and one row per slot of each schedule.

CREATE TABLE scheduled_exports (
    id               UUID PRIMARY KEY,
    tenant_id        UUID NOT NULL,
    user_id          TEXT NOT NULL,
    export_type      TEXT NOT NULL,
    format           TEXT NOT NULL CHECK (format IN ('csv', 'json', 'ndjson')),
    field_selection  TEXT[] NOT NULL DEFAULT '{}',
    date_range_type  TEXT NOT NULL CHECK (date_range_type IN ('last_week', 'last_month', 'all_time')),
    frequency        TEXT NOT NULL CHECK (frequency IN ('weekly', 'monthly')),
    -- ISO weekday (1 = Monday) for weekly schedules, day of month for monthly ones.
    weekday          SMALLINT CHECK (weekday BETWEEN 1 AND 7),
    day_of_month     SMALLINT CHECK (day_of_month BETWEEN 1 AND 31),
    time_of_day      TIME NOT NULL DEFAULT '08:00',
    time_zone        TEXT NOT NULL DEFAULT 'UTC',
    enabled          BOOLEAN NOT NULL DEFAULT true,
    delivery_method  TEXT NOT NULL DEFAULT 'email' CHECK (delivery_method IN ('email', 'download')),
    delivery_email   TEXT,
    last_run_at      TIMESTAMPTZ,
    next_run_at      TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((frequency = 'weekly') = (weekday IS NOT NULL)),
    CHECK ((frequency = 'monthly') = (day_of_month IS NOT NULL)),
    CHECK (delivery_method <> 'email' OR delivery_email IS NOT NULL)
);
-- The scheduler's claim: due, enabled schedules in slot order.
CREATE INDEX scheduled_exports_due ON scheduled_exports (next_run_at) WHERE enabled;
CREATE INDEX scheduled_exports_tenant ON scheduled_exports (tenant_id, created_at, id);

-- One row per slot: the unique key is the exactly-once guarantee across replicas.
CREATE TABLE scheduled_export_runs (
    id             UUID PRIMARY KEY,
    schedule_id    UUID NOT NULL REFERENCES scheduled_exports (id) ON DELETE CASCADE,
    tenant_id      UUID NOT NULL,
    scheduled_for  TIMESTAMPTZ NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'skipped')),
    late           BOOLEAN NOT NULL DEFAULT false,
    export_id      UUID,
    object_key     TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (schedule_id, scheduled_for)
);
CREATE INDEX scheduled_export_runs_schedule ON scheduled_export_runs (schedule_id, scheduled_for DESC);
