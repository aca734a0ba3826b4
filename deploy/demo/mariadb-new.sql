-- turnout demo, MariaDB/MySQL: new, the changed schema (see postgres-new.sql).
CREATE TABLE clients (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    full_name varchar(200) NOT NULL,
    email varchar(200) NOT NULL UNIQUE,
    email_domain varchar(200),
    created_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
CREATE TABLE orders (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount_cents int NOT NULL,
    placed_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
