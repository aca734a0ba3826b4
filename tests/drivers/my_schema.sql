CREATE TABLE ledger (id BIGINT PRIMARY KEY, worker INT NOT NULL, n INT NOT NULL,
                     amount DECIMAL(12,2) NOT NULL, note VARCHAR(64));
CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL);
INSERT INTO accounts SELECT seq, 100000 FROM seq_1_to_8;
CREATE TABLE items (id BIGINT PRIMARY KEY, worker INT NOT NULL,
                    token CHAR(36) NOT NULL DEFAULT UUID(),
                    score DOUBLE NOT NULL DEFAULT RAND(),
                    short_id BIGINT UNSIGNED NOT NULL DEFAULT UUID_SHORT(),
                    status VARCHAR(16) NOT NULL DEFAULT 'new',
                    made DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
