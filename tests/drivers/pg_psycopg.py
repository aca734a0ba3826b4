"""psycopg 3 workload (server-side binding, pipeline mode, executemany)."""
import json
import sys
import threading

import psycopg

DSN, WORKERS, STEPS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lock = threading.Lock()
committed, rolled_back, items = [], [], [0]


def worker(w):
    mine_c, mine_r, mine_items = [], [], 0
    with psycopg.connect(DSN) as conn:
        for step in range(STEPS):
            base = w * 1000000 + step * 10
            a, b = sorted(((w + step) % 8 + 1, (w + step + 3) % 8 + 1))
            # A transaction that commits or rolls back.
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO ledger (id, worker, n, amount, note) VALUES (%s, %s, %s, %s, %s)",
                    (base, w, step, step * 1.25, f"w{w}"),
                )
                cur.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (a,))
                cur.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (b,))
            if step % 3 == 0:
                conn.rollback()
                mine_r.append(base)
            else:
                conn.commit()
                mine_c.append(base)
            # A savepoint with a failing statement rolled back to.
            with conn.transaction():
                with conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO ledger (id, worker, n, amount) VALUES (%s, %s, %s, %s)",
                        (base + 1, w, step, 1),
                    )
                    try:
                        with conn.transaction():
                            cur.execute(
                                "INSERT INTO ledger (id, worker, n, amount) VALUES (%s, %s, %s, %s)",
                                (base + 1, w, step, 2),
                            )
                    except psycopg.errors.UniqueViolation:
                        pass
                    cur.execute(
                        "INSERT INTO ledger (id, worker, n, amount) VALUES (%s, %s, %s, %s)",
                        (base + 2, w, step, 3),
                    )
            mine_c += [base + 1, base + 2]
            # executemany: a pipeline of Parse/Bind/Execute groups, a Sync, a Flush.
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO ledger (id, worker, n, amount) VALUES (%s, %s, %s, %s)",
                    [(base + k, w, step, k) for k in (3, 4, 5)],
                )
            conn.commit()
            mine_c += [base + 3, base + 4, base + 5]
            # Inserts relying on defaults, prepared past the threshold.
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO items (id, worker) VALUES (%s, %s)", (base, w), prepare=True
                )
            conn.commit()
            mine_items += 1
            # Pipeline mode with an autocommit-like sequence of statements.
            with conn.pipeline():
                with conn.cursor() as cur:
                    cur.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (base,))
                    cur.execute(
                        "INSERT INTO ledger (id, worker, n, amount) VALUES (%s, %s, %s, %s)",
                        (base + 6, w, step, 6),
                    )
            conn.commit()
            mine_c.append(base + 6)
    with lock:
        committed.extend(mine_c)
        rolled_back.extend(mine_r)
        items[0] += mine_items


threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"committed": committed, "rolled_back": rolled_back, "items": items[0]}))
