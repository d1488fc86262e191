-- Processing attempts of stream messages whose processing asked for a retry (SPEC §1): the
-- functions count attempts themselves, so deliveries a broker failover spends without the
-- message being processed never bring it closer to `retry_exhausted`. Kept in the system schema
-- only (one table for every tenant and consumer); tenant schemas skip this migration's table.
DO $$
BEGIN
    IF current_schema() = 'wa_system' THEN
        CREATE TABLE delivery_attempts (
            consumer text NOT NULL,
            stream text NOT NULL,
            stream_sequence bigint NOT NULL,
            published_us bigint NOT NULL,
            attempts integer NOT NULL,
            first_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, stream, stream_sequence, published_us)
        );
        CREATE INDEX delivery_attempts_updated_at_idx ON delivery_attempts (updated_at);
    END IF;
END
$$;
