-- The mixed write workload's schema (tests/pg_row_images.rs), created on
-- both sides: defaults the servers fill in (identity, serial, now(),
-- clock_timestamp(), gen_random_uuid(), random()), types that must round
-- trip exactly (numeric through a domain, timestamptz, float8 and real,
-- arrays, jsonb, bytea, an enum, NULLs), and one table without a key.
CREATE TYPE mood AS ENUM ('calm', 'busy', 'gone');
CREATE DOMAIN cents AS numeric(14,2) CHECK (VALUE > -1000000000);
CREATE TABLE accounts (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner uuid NOT NULL DEFAULT gen_random_uuid(),
    balance cents NOT NULL DEFAULT 0,
    opened timestamptz NOT NULL DEFAULT now(),
    touched timestamptz DEFAULT clock_timestamp(),
    score float8 DEFAULT random(),
    half real,
    mood mood DEFAULT 'calm',
    tags text[] NOT NULL DEFAULT '{}',
    meta jsonb,
    blob bytea
);
CREATE TABLE jobs (id serial PRIMARY KEY, state text NOT NULL DEFAULT 'new', worker int,
                   claimed timestamptz, payload jsonb);
CREATE TABLE counters (k text PRIMARY KEY, n bigint NOT NULL DEFAULT 0,
                       at timestamptz NOT NULL DEFAULT now());
CREATE TABLE events (id bigserial PRIMARY KEY, account int, kind text NOT NULL, amount numeric,
                     at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE audit (at timestamptz DEFAULT clock_timestamp(), note text);
