-- The tenants this deployment serves (SPEC §3, §17): which company id owns each schema (ids that
-- differ only in case map to one schema; the first seen owns it, the others are refused), where
-- the schema is placed, and its state. Kept in the system schema only, like delivery_attempts.
DO $$
BEGIN
    IF current_schema() = 'wa_system' THEN
        CREATE TABLE tenants (
            schema_name text PRIMARY KEY,
            tenant_id text NOT NULL UNIQUE,
            placement text NOT NULL DEFAULT 'default',
            state text NOT NULL DEFAULT 'active',
            created_at timestamptz NOT NULL DEFAULT now()
        );
    END IF;
END
$$;
