-- Memory: project knowledge items, context modules and generated context packs.
-- depends: 0008_create_events

CREATE TABLE memory_items (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    project text NOT NULL,
    kind text NOT NULL,
    content text NOT NULL,
    -- SHA-256 of the normalised content, computed by the application; the
    -- dedupe key within a project.
    content_hash bytea NOT NULL,
    confidence double precision NOT NULL DEFAULT 0.5,
    status text NOT NULL DEFAULT 'candidate',
    -- Where the item came from (source, author, commit...).
    provenance jsonb NOT NULL DEFAULT '{}',
    -- Paths, symbols or topics the item is about.
    anchors text[] NOT NULL DEFAULT '{}',
    -- squawk-ignore prefer-bigint-over-int -- bounded: reads of one item
    access_count integer NOT NULL DEFAULT 0,
    last_accessed_at timestamptz,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memory_items_project_check CHECK (length(btrim(project)) > 0),
    CONSTRAINT memory_items_kind_check
        CHECK (kind IN ('decision', 'constraint', 'gotcha', 'style_rule', 'learning')),
    CONSTRAINT memory_items_content_check CHECK (length(btrim(content)) > 0),
    CONSTRAINT memory_items_content_hash_check CHECK (octet_length(content_hash) = 32),
    CONSTRAINT memory_items_confidence_check CHECK (confidence BETWEEN 0 AND 1),
    CONSTRAINT memory_items_status_check
        CHECK (status IN ('candidate', 'active', 'stable', 'deprecated')),
    CONSTRAINT memory_items_provenance_check CHECK (jsonb_typeof(provenance) = 'object'),
    CONSTRAINT memory_items_anchors_check CHECK (array_position(anchors, NULL) IS NULL),
    CONSTRAINT memory_items_access_count_check CHECK (access_count >= 0),
    CONSTRAINT memory_items_project_content_hash_key UNIQUE (project, content_hash)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
-- Recall: one project's items of a status, most trusted first.
CREATE INDEX memory_items_project_status_confidence_idx
    ON memory_items (project, status, confidence DESC, created_at DESC, id DESC);
CREATE INDEX memory_items_anchors_idx ON memory_items USING gin (anchors);
-- Expiry sweep.
CREATE INDEX memory_items_expires_idx ON memory_items (expires_at)
    WHERE expires_at IS NOT NULL;

CREATE TRIGGER memory_items_set_updated_at
    BEFORE UPDATE ON memory_items
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Lifecycle of a memory item: candidate -> active -> stable, and any of them
-- -> deprecated, which is final.
CREATE FUNCTION check_memory_item_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Parenthesised: PL/pgSQL ends an IF condition at the first bare THEN.
    IF (CASE OLD.status
            WHEN 'candidate' THEN NEW.status IN ('active', 'deprecated')
            WHEN 'active' THEN NEW.status IN ('stable', 'deprecated')
            WHEN 'stable' THEN NEW.status = 'deprecated'
            ELSE false
        END) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'illegal memory_items status transition: % -> %',
                    OLD.status, NEW.status
        USING ERRCODE = 'check_violation',
              CONSTRAINT = TG_NAME,
              SCHEMA = TG_TABLE_SCHEMA,
              TABLE = TG_TABLE_NAME,
              COLUMN = 'status';
END;
$$;

CREATE TRIGGER memory_items_status_transition
    BEFORE UPDATE OF status ON memory_items
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION check_memory_item_transition();

-- A named, prioritised selection of one project's memory.
CREATE TABLE memory_context_modules (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    project text NOT NULL,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    -- Rules that pick items (kinds, anchors, minimum confidence...).
    selectors jsonb NOT NULL DEFAULT '{}',
    -- squawk-ignore prefer-bigint-over-int -- bounded: a small ordering weight
    priority integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memory_context_modules_project_check CHECK (length(btrim(project)) > 0),
    CONSTRAINT memory_context_modules_name_check CHECK (length(btrim(name)) > 0),
    CONSTRAINT memory_context_modules_selectors_check
        CHECK (jsonb_typeof(selectors) = 'object'),
    CONSTRAINT memory_context_modules_project_name_key UNIQUE (project, name)
);

CREATE TRIGGER memory_context_modules_set_updated_at
    BEFORE UPDATE ON memory_context_modules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Ordered membership of items in a module. A link row whose only mutable
-- column is position, so it carries no updated_at.
CREATE TABLE memory_module_items (
    module_id uuid NOT NULL,
    item_id uuid NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: items of one module
    position integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Also the index of memory_module_items_module_id_fkey (leading column).
    CONSTRAINT memory_module_items_pkey PRIMARY KEY (module_id, item_id),
    CONSTRAINT memory_module_items_module_id_fkey FOREIGN KEY (module_id)
        REFERENCES memory_context_modules (id) ON DELETE CASCADE,
    CONSTRAINT memory_module_items_item_id_fkey FOREIGN KEY (item_id)
        REFERENCES memory_items (id) ON DELETE CASCADE,
    CONSTRAINT memory_module_items_position_check CHECK (position >= 0),
    -- Deferrable so that a reorder can swap positions in one transaction.
    CONSTRAINT memory_module_items_module_id_position_key UNIQUE (module_id, position)
        DEFERRABLE INITIALLY IMMEDIATE
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
CREATE INDEX memory_module_items_item_id_idx ON memory_module_items (item_id);

-- A generated bundle of modules/items that fits a token budget; kept as a
-- record of what was handed out, so never rewritten.
CREATE TABLE memory_context_packs (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    project text NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: tokens of one context window
    token_budget integer NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: tokens of one context window
    token_count integer NOT NULL,
    -- The modules the pack was built from (no FK: the pack outlives them).
    module_ids uuid[] NOT NULL,
    -- The selected items as handed out, in order.
    items jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memory_context_packs_project_check CHECK (length(btrim(project)) > 0),
    CONSTRAINT memory_context_packs_token_budget_check CHECK (token_budget > 0),
    CONSTRAINT memory_context_packs_token_count_check
        CHECK (token_count >= 0 AND token_count <= token_budget),
    CONSTRAINT memory_context_packs_module_ids_check
        CHECK (array_position(module_ids, NULL) IS NULL),
    CONSTRAINT memory_context_packs_items_check CHECK (jsonb_typeof(items) = 'array')
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
CREATE INDEX memory_context_packs_project_created_idx
    ON memory_context_packs (project, created_at DESC, id DESC);

CREATE TRIGGER memory_context_packs_immutable
    BEFORE UPDATE ON memory_context_packs
    FOR EACH ROW EXECUTE FUNCTION reject_update();
