-- The schema every driver workload writes to (created on both sides).
CREATE TABLE ledger (id bigint PRIMARY KEY, worker int NOT NULL, n int NOT NULL,
                     amount numeric(12,2) NOT NULL, note text);
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, 100000 FROM generate_series(1, 8) g;
CREATE TABLE items (id bigint PRIMARY KEY, worker int NOT NULL,
                    status text NOT NULL DEFAULT 'new', qty int NOT NULL DEFAULT 1,
                    tags text[] NOT NULL DEFAULT '{}');
