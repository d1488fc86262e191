-- Moves of tenants between placements (SPEC §17), on the main database: one row per tenant
-- schema being moved (or last moved), with the last step it completed, so that `wa-admin tenants
-- move` resumes an interrupted move from there and `--abort` knows what to undo. Kept in the
-- system schema only.
DO $$
BEGIN
    IF current_schema() = 'wa_system' THEN
        CREATE TABLE tenant_moves (
            schema_name text PRIMARY KEY,
            tenant_id text NOT NULL,
            source text NOT NULL,
            target text NOT NULL,
            step text NOT NULL,
            drop_source boolean NOT NULL DEFAULT false,
            started_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
    END IF;
END
$$;
