-- Exhausted events: which DLQ message each row came from (so a redelivered DLQ message does not
-- write a second row) and when an operator replayed it.
ALTER TABLE exhausted_events ADD COLUMN dlq_stream text;
ALTER TABLE exhausted_events ADD COLUMN dlq_sequence bigint;
ALTER TABLE exhausted_events ADD COLUMN item_index integer;
ALTER TABLE exhausted_events ADD COLUMN replayed_at timestamptz;
CREATE UNIQUE INDEX exhausted_events_dlq_key ON exhausted_events (dlq_stream, dlq_sequence, COALESCE(item_index, -1));
CREATE INDEX exhausted_events_source_subject_idx ON exhausted_events (source_subject);
