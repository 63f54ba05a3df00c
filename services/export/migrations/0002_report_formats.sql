-- Reports render PDF too.
ALTER TABLE export_history DROP CONSTRAINT export_history_format_check,
    ADD CONSTRAINT export_history_format_check CHECK (format IN ('csv', 'json', 'ndjson', 'rows', 'pdf'));
