-- A stream message is identified by stream, sequence *and* the time the stream stored it: a
-- recreated stream reuses sequence numbers, and its new messages must never be taken for
-- redeliveries of old ones.
ALTER TABLE inbox ADD COLUMN published_us bigint NOT NULL DEFAULT 0;
ALTER TABLE inbox DROP CONSTRAINT inbox_pkey;
ALTER TABLE inbox ADD PRIMARY KEY (stream, stream_sequence, published_us);
