-- Catalog, part one: packs (actions follow once workflows exist).
-- depends: 0002_create_identity

CREATE TABLE packs (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    -- Namespace of the pack's actions: action "core.http" lives in pack "core".
    ref text NOT NULL,
    label text NOT NULL,
    description text NOT NULL DEFAULT '',
    version text NOT NULL DEFAULT '0.1.0',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT packs_ref_check CHECK (ref ~ '^[a-z][a-z0-9_]*$'),
    CONSTRAINT packs_label_check CHECK (length(btrim(label)) > 0),
    CONSTRAINT packs_version_check CHECK (length(btrim(version)) > 0),
    CONSTRAINT packs_ref_key UNIQUE (ref)
);

CREATE TRIGGER packs_set_updated_at
    BEFORE UPDATE ON packs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
