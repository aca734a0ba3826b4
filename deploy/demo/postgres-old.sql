-- turnout demo, PostgreSQL: old, the application's schema and rows.
-- Used by `turnout demo` and by deploy/compose.yaml.
CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    legacy_code text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers(id),
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    placed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email, legacy_code)
    SELECT 'customer ' || i, 'customer' || i || '@example' || (i % 3) || '.com', 'L' || i
    FROM generate_series(1, 100) i;
INSERT INTO orders (customer_id, amount_cents)
    SELECT 1 + (i % 100), (i * 137) % 10000 FROM generate_series(1, 1000) i;
