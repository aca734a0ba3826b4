-- turnout demo, MariaDB/MySQL: old, the application's schema and rows.
-- Used by `turnout demo --mysql`.
CREATE TABLE customers (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    name varchar(200) NOT NULL,
    email varchar(200) NOT NULL UNIQUE,
    legacy_code varchar(50),
    created_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
CREATE TABLE orders (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount_cents int NOT NULL,
    placed_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    FOREIGN KEY (customer_id) REFERENCES customers (id)
);
INSERT INTO customers (name, email, legacy_code)
    SELECT CONCAT('customer ', i), CONCAT('customer', i, '@example', i % 3, '.com'), CONCAT('L', i)
    FROM (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100)
          SELECT i FROM s) AS s;
INSERT INTO orders (customer_id, amount_cents)
    SELECT 1 + (i % 100), (i * 137) % 10000
    FROM (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000)
          SELECT i FROM s) AS s;
