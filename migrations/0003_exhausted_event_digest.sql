-- A DLQ message is identified by its stream position *and* its content: a stream that is
-- recreated (or another NATS deployment) reuses sequence numbers, and a new dead letter must
-- never be taken for a redelivery of an old one.
ALTER TABLE exhausted_events ADD COLUMN dlq_digest text;
DROP INDEX exhausted_events_dlq_key;
CREATE UNIQUE INDEX exhausted_events_dlq_key
    ON exhausted_events (dlq_stream, dlq_sequence, COALESCE(item_index, -1), dlq_digest);
