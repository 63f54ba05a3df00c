-- An OAuth state is bound to the browser that will come back with it. BeginOAuth hands out a
-- single-use start ticket (60 s); the browser that opens the start link gets a cookie whose
-- hash is stored here, and only then is the state that travels to the provider made (the
-- state_hash is replaced); the callback must present that cookie.
ALTER TABLE oauth_states
    ADD COLUMN ticket_hash       BYTEA UNIQUE,
    ADD COLUMN ticket_expires_at TIMESTAMPTZ,
    ADD COLUMN started_at        TIMESTAMPTZ,
    ADD COLUMN browser_hash      BYTEA;
