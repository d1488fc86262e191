-- A fresh tenant schema as migrations 0001-0008 leave it, in one pass: what 0002-0004 add or
-- rebuild (exhausted events' DLQ key, the inbox's publish time in its key) is declared in the
-- tables themselves, so creating a schema builds each index once. 0005-0008 create nothing in
-- tenant schemas. A schema with no migration applied gets this (see `schema::TENANT_BASELINE`)
-- and records versions 1-8; tests check it equals a schema migrated one step at a time.

CREATE TABLE chats (
    id                     bigserial PRIMARY KEY,
    chat_id                text NOT NULL UNIQUE,
    jid                    text,
    push_name              text,
    custom_name            text,
    group_name             text,
    phone_number           text,
    agent_id               text,
    company_id             text,
    assigned_to            text,
    is_group               boolean,
    not_spam               boolean,
    unread_count           integer,
    last_message           jsonb,
    conversation_timestamp bigint,
    last_metadata          jsonb,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chats_agent_id_idx ON chats (agent_id);
CREATE INDEX chats_phone_number_idx ON chats (phone_number);
CREATE INDEX chats_conversation_timestamp_idx ON chats (conversation_timestamp);

CREATE TABLE messages (
    id                 bigserial,
    message_id         text NOT NULL,
    from_phone         text,
    to_phone           text,
    chat_id            text,
    jid                text,
    message_text       text,
    message_url        text,
    message_type       text,
    flow               text,
    agent_id           text,
    company_id         text,
    status             text,
    -- rank of status (0..5), kept beside it so the monotonic guard is a plain comparison
    status_rank        smallint,
    key                jsonb,
    message_obj        jsonb,
    edited_message_obj jsonb,
    last_metadata      jsonb,
    is_deleted         boolean NOT NULL DEFAULT false,
    message_timestamp  bigint,
    message_date       date NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, message_date),
    UNIQUE (message_id, message_date)
) PARTITION BY RANGE (message_date);
CREATE INDEX messages_chat_id_idx ON messages (chat_id);
CREATE INDEX messages_jid_idx ON messages (jid);
CREATE INDEX messages_from_phone_idx ON messages (from_phone);
CREATE INDEX messages_to_phone_idx ON messages (to_phone);
CREATE INDEX messages_agent_id_idx ON messages (agent_id);
CREATE INDEX messages_message_timestamp_idx ON messages (message_timestamp);

CREATE TABLE contacts (
    id                      text PRIMARY KEY,
    phone_number            text NOT NULL,
    agent_id                text NOT NULL,
    chat_id                 text,
    push_name               text,
    custom_name             text,
    type                    text,
    notes                   text,
    tags                    text,
    origin                  text,
    avatar                  text,
    assigned_to             text,
    pob                     text,
    gender                  text,
    company_id              text,
    dob                     date,
    status                  text DEFAULT 'ACTIVE',
    first_message_id        text,
    first_message_timestamp bigint,
    last_metadata           jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, phone_number)
);
CREATE INDEX contacts_phone_number_idx ON contacts (phone_number);

CREATE TABLE agents (
    id                 bigserial PRIMARY KEY,
    agent_id           text NOT NULL UNIQUE,
    qr_code            text,
    status             text,
    agent_name         text,
    phone_number       text,
    host_name          text,
    version            text,
    company_id         text,
    last_metadata      jsonb,
    -- JetStream publish time of the event that wrote the row: last writer wins by it
    event_published_at timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE onboarding_log (
    id            bigserial PRIMARY KEY,
    message_id    text,
    agent_id      text,
    company_id    text,
    phone_number  text UNIQUE,
    "timestamp"   bigint,
    last_metadata jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE exhausted_events (
    id                   bigserial PRIMARY KEY,
    created_at           timestamptz NOT NULL DEFAULT now(),
    company_id           text,
    source_subject       text,
    error_type           text,
    last_error           text,
    retry_count          integer,
    event_timestamp      timestamptz,
    dlq_payload          jsonb,
    original_payload     jsonb,
    original_payload_raw bytea,
    resolved             boolean NOT NULL DEFAULT false,
    resolved_at          timestamptz,
    notes                text,
    dlq_stream           text,
    dlq_sequence         bigint,
    item_index           integer,
    replayed_at          timestamptz,
    dlq_digest           text
);
CREATE UNIQUE INDEX exhausted_events_dlq_key
    ON exhausted_events (dlq_stream, dlq_sequence, COALESCE(item_index, -1), dlq_digest);
CREATE INDEX exhausted_events_source_subject_idx ON exhausted_events (source_subject);
CREATE INDEX exhausted_events_unresolved_idx ON exhausted_events (created_at) WHERE NOT resolved;

-- Exactly-once effects: one row per stream message whose effects were committed, written in
-- the same transaction as those effects. dead_items keeps the history items that were
-- dead-lettered, so a redelivery can publish them again.
CREATE TABLE inbox (
    stream          text NOT NULL,
    stream_sequence bigint NOT NULL,
    dead_items      jsonb,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    published_us    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, stream_sequence, published_us)
);
CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);
