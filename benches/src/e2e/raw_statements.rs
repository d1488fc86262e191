//! The raw SQL baseline's statements: plain `INSERT … SELECT FROM unnest(…) ON CONFLICT` and
//! `UPDATE … FROM unnest(…)`, one per table, over the product's tables (search_path set to the
//! baseline's schema). Array parameters come as text and are cast to jsonb where the column is.

pub(super) const INSERT_INBOX: &str = "
INSERT INTO inbox (stream, stream_sequence, published_us)
SELECT $1, s, p FROM unnest($2::int8[], $3::int8[]) AS u(s, p)";

pub(super) const UPSERT_CHATS: &str = "
INSERT INTO chats AS c (chat_id, jid, phone_number, push_name, agent_id, company_id, is_group,
                        unread_count, last_message, conversation_timestamp, last_metadata)
SELECT u.chat_id, u.jid, u.phone, u.push_name, u.agent_id, u.company_id, u.is_group, u.unread,
       u.last_message::jsonb, u.conv_ts, u.meta::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[],
            $8::int4[], $9::text[], $10::int8[], $11::text[])
    AS u(chat_id, jid, phone, push_name, agent_id, company_id, is_group, unread, last_message,
         conv_ts, meta)
ON CONFLICT (chat_id) DO UPDATE SET
    jid = COALESCE(EXCLUDED.jid, c.jid),
    phone_number = COALESCE(EXCLUDED.phone_number, c.phone_number),
    push_name = COALESCE(EXCLUDED.push_name, c.push_name),
    is_group = COALESCE(EXCLUDED.is_group, c.is_group),
    unread_count = COALESCE(c.unread_count, 0) + EXCLUDED.unread_count,
    last_message = COALESCE(EXCLUDED.last_message, c.last_message),
    conversation_timestamp = GREATEST(c.conversation_timestamp, EXCLUDED.conversation_timestamp),
    last_metadata = EXCLUDED.last_metadata,
    updated_at = now()";

pub(super) const UPSERT_MESSAGES: &str = "
INSERT INTO messages AS m (message_id, message_date, from_phone, to_phone, chat_id, jid,
                           message_text, message_url, message_type, flow, agent_id, company_id,
                           status, status_rank, key, message_obj, edited_message_obj,
                           message_timestamp, last_metadata)
SELECT u.message_id, u.message_date, u.from_phone, u.to_phone, u.chat_id, u.jid, u.message_text,
       u.message_url, u.message_type, u.flow, u.agent_id, u.company_id, u.status, u.status_rank,
       u.key::jsonb, u.message_obj::jsonb, u.edited::jsonb, u.ts, u.meta::jsonb
FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::int2[], $15::text[], $16::text[], $17::text[], $18::int8[], $19::text[])
    AS u(message_id, message_date, from_phone, to_phone, chat_id, jid, message_text, message_url,
         message_type, flow, agent_id, company_id, status, status_rank, key, message_obj, edited,
         ts, meta)
ON CONFLICT (message_id, message_date) DO UPDATE SET
    from_phone = EXCLUDED.from_phone,
    to_phone = EXCLUDED.to_phone,
    chat_id = EXCLUDED.chat_id,
    jid = EXCLUDED.jid,
    message_text = EXCLUDED.message_text,
    message_url = COALESCE(EXCLUDED.message_url, m.message_url),
    message_type = EXCLUDED.message_type,
    status = GREATEST(m.status, EXCLUDED.status),
    status_rank = GREATEST(m.status_rank, EXCLUDED.status_rank),
    key = EXCLUDED.key,
    message_obj = EXCLUDED.message_obj,
    edited_message_obj = COALESCE(EXCLUDED.edited_message_obj, m.edited_message_obj),
    message_timestamp = EXCLUDED.message_timestamp,
    last_metadata = EXCLUDED.last_metadata,
    updated_at = now()";

pub(super) const UPDATE_RECEIPTS: &str = "
UPDATE messages m SET
    status = COALESCE(u.status, m.status),
    status_rank = COALESCE(u.status_rank, m.status_rank),
    edited_message_obj = COALESCE(u.edited::jsonb, m.edited_message_obj),
    is_deleted = COALESCE(u.is_deleted, m.is_deleted),
    last_metadata = u.meta::jsonb,
    updated_at = now()
FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::bool[], $6::text[])
    AS u(message_id, status, status_rank, edited, is_deleted, meta)
WHERE m.message_id = u.message_id";

pub(super) const UPSERT_CONTACTS: &str = "
INSERT INTO contacts AS c (id, agent_id, phone_number, chat_id, push_name, company_id, last_metadata)
SELECT gen_random_uuid()::text, u.agent_id, u.phone, u.chat_id, u.push_name, u.company_id,
       u.meta::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
    AS u(agent_id, phone, chat_id, push_name, company_id, meta)
ON CONFLICT (agent_id, phone_number) DO UPDATE SET
    chat_id = EXCLUDED.chat_id,
    push_name = EXCLUDED.push_name,
    last_metadata = EXCLUDED.last_metadata,
    updated_at = now()";

pub(super) const UPSERT_AGENTS: &str = "
INSERT INTO agents AS a (agent_id, status, host_name, version, qr_code, company_id,
                         event_published_at, last_metadata)
SELECT u.agent_id, u.status, u.host_name, u.version, u.qr_code, u.company_id, u.published,
       u.meta::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::text[])
    AS u(agent_id, status, host_name, version, qr_code, company_id, published, meta)
ON CONFLICT (agent_id) DO UPDATE SET
    status = EXCLUDED.status,
    host_name = EXCLUDED.host_name,
    version = EXCLUDED.version,
    qr_code = EXCLUDED.qr_code,
    event_published_at = EXCLUDED.event_published_at,
    last_metadata = EXCLUDED.last_metadata,
    updated_at = now()";
