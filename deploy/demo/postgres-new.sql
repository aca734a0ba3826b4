-- turnout demo, PostgreSQL: new, the changed schema (no rows: the backfill
-- copies them). customers is clients here, name is full_name, legacy_code is
-- gone and email_domain is computed (see the [mapping] in turnout.toml).
-- The foreign key comes back in the contract phase, once every client is here.
CREATE TABLE clients (
    id bigserial PRIMARY KEY,
    full_name text NOT NULL,
    email text NOT NULL UNIQUE,
    email_domain text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    placed_at timestamptz NOT NULL DEFAULT now()
);
