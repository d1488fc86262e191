-- Tenant placement (SPEC §17): on every database that holds tenant schemas, the schemas whose
-- writes are fenced off there (a tenant being moved away, paused, or moved: its copy here is no
-- longer the one written), and the function every write transaction enters a tenant's schema
-- with: it takes the tenant's lock, then refuses a fenced schema with SQLSTATE WAF01, so a
-- writer that still believes the tenant lives here cannot write after the fence is committed
-- (the fence is inserted under the same lock, so it also waits for writers already inside).
-- Kept in the system schema only.
DO $$
BEGIN
    IF current_schema() = 'wa_system' THEN
        CREATE TABLE fences (
            schema_name text PRIMARY KEY,
            reason text NOT NULL,
            fenced_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE FUNCTION enter_tenant(p_schema text, p_lock_key text) RETURNS text
        LANGUAGE plpgsql VOLATILE AS $fn$
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended(p_lock_key, 0));
            IF EXISTS (SELECT 1 FROM wa_system.fences WHERE schema_name = p_schema) THEN
                RAISE EXCEPTION 'tenant schema % is fenced on this database (%)', p_schema,
                    (SELECT reason FROM wa_system.fences WHERE schema_name = p_schema)
                    USING ERRCODE = 'WAF01';
            END IF;
            RETURN '';
        END
        $fn$;
    END IF;
END
$$;
