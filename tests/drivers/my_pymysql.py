"""PyMySQL workload (text protocol, client-side parameters): transactions that
commit and roll back, savepoints, executemany, inserts relying on UUID(),
RAND(), UUID_SHORT() and CURRENT_TIMESTAMP defaults, autocommit updates.
python3 my_pymysql.py <port> <password> <workers> <steps>"""
import json
import sys
import threading

import pymysql

PORT, PASSWORD, WORKERS, STEPS = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
committed, rolled_back, items = [], [], [0]


def worker(w):
    c_, r_, n_items = [], [], 0
    conn = pymysql.connect(host="127.0.0.1", port=PORT, user="app", password=PASSWORD,
                           database="app", autocommit=False)
    ins = "INSERT INTO ledger (id, worker, n, amount, note) VALUES (%s, %s, %s, %s, %s)"
    with conn.cursor() as cur:
        for step in range(STEPS):
            base = w * 1000000 + step * 10
            a, b = sorted(((w + step) % 8 + 1, (w + step + 3) % 8 + 1))
            cur.execute(ins, (base, w, step, step * 1.25, "it's \\ w%d" % w))
            cur.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (a,))
            cur.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (b,))
            if step % 3 == 0:
                conn.rollback()
                r_.append(base)
            else:
                conn.commit()
                c_.append(base)
            cur.execute(ins, (base + 1, w, step, 1, None))
            cur.execute("SAVEPOINT s")
            try:
                cur.execute(ins, (base + 1, w, step, 2, None))
            except pymysql.err.IntegrityError:
                cur.execute("ROLLBACK TO SAVEPOINT s")
            cur.execute(ins, (base + 2, w, step, 3, None))
            conn.commit()
            c_ += [base + 1, base + 2]
            # executemany: one multi-row INSERT.
            cur.executemany(ins, [(base + k, w, step, k, None) for k in (3, 4, 5)])
            conn.commit()
            c_ += [base + 3, base + 4, base + 5]
            # Defaults: UUID(), RAND(), UUID_SHORT(), CURRENT_TIMESTAMP(6).
            cur.execute("INSERT INTO items (id, worker) VALUES (%s, %s), (%s, %s)",
                        (base, w, base + 1, w))
            conn.commit()
            n_items += 2
            conn.autocommit(True)
            cur.execute(ins, (base + 6, w, step, 6, None))
            cur.execute("UPDATE items SET status = 'seen' WHERE id = %s", (base,))
            conn.autocommit(False)
            c_.append(base + 6)
    conn.close()
    with lock:
        committed.extend(c_)
        rolled_back.extend(r_)
        items[0] += n_items


threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"committed": committed, "rolled_back": rolled_back, "items": items[0]}))
