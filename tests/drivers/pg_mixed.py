"""The mixed write workload with psycopg 3 (server-side binding): workers
run random everyday write shapes for a number of seconds. Prints a JSON
report of what ran."""
import json
import random
import sys
import threading
import time
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb

DSN, WORKERS, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lock = threading.Lock()
report = {"ops": 0, "rolled_back": 0, "deadlocks": 0, "errors": []}


def op(cur, conn, w, r):
    k = r.randrange(14)
    if k == 0:
        cur.execute(
            "INSERT INTO accounts (balance, tags, meta, blob, half, mood) "
            "VALUES (%s, %s, %s, %s, %s, %s::mood) RETURNING id, owner, opened",
            (Decimal(r.randrange(-99999, 99999)) / 100, [f"w{w}", "x y"],
             Jsonb({"w": w, "f": r.random(), "s": "it's \"q\""}),
             bytes([0, 1, 2, 255, w % 256]), r.random(), r.choice(["calm", "busy"])),
        )
        cur.fetchall()
    elif k == 1:
        cur.execute(
            "INSERT INTO counters (k, n) VALUES (%s, 1) "
            "ON CONFLICT (k) DO UPDATE SET n = counters.n + 1, at = now() RETURNING n",
            (f"c{r.randrange(17)}",),
        )
        cur.fetchall()
    elif k == 2:
        cur.execute("INSERT INTO jobs (payload) VALUES (%s)", (Jsonb({"by": w}),))
    elif k == 3:
        cur.execute(
            "UPDATE jobs SET state = 'claimed', worker = %s, claimed = clock_timestamp() "
            "WHERE id = (SELECT id FROM jobs WHERE state = 'new' ORDER BY id LIMIT 1 "
            "FOR UPDATE SKIP LOCKED) RETURNING id",
            (w,),
        )
        cur.fetchall()
    elif k == 4:
        cur.execute(
            "UPDATE accounts SET balance = balance + %s, touched = clock_timestamp(), "
            "score = random() WHERE id = (SELECT max(id) FROM accounts)",
            (Decimal(r.randrange(-500, 500)) / 10,),
        )
    elif k == 5:
        cur.execute("DELETE FROM events WHERE id = (SELECT id FROM events ORDER BY at LIMIT 1)")
    elif k == 6:
        cur.execute(
            "INSERT INTO events (account, kind, amount) "
            "SELECT id, 'interest', balance * 0.01 FROM accounts ORDER BY id DESC LIMIT 3"
        )
    elif k == 7:
        cur.execute(
            "UPDATE jobs SET state = 'done', payload = jobs.payload || jsonb_build_object('owner', a.owner) "
            "FROM accounts a WHERE jobs.worker = %s AND jobs.state = 'claimed' AND a.id = jobs.id %% 20 + 1",
            (w,),
        )
    elif k == 8:
        # Rolled back: none of it may reach either side.
        cur.execute("INSERT INTO accounts (balance) VALUES (%s) RETURNING id", (Decimal("1.5"),))
        cur.execute("UPDATE counters SET n = n + 1000 WHERE k = %s", (f"c{r.randrange(17)}",))
        conn.rollback()
        return "rolled_back"
    elif k == 9:
        a, b = sorted(r.sample(range(1, 21), 2))
        cur.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (a,))
        cur.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (b,))
        cur.execute(
            "INSERT INTO events (account, kind, amount) VALUES (%s, 'transfer', 1) RETURNING id, at",
            (b,),
        )
        cur.fetchall()
    elif k == 10:
        cur.execute("INSERT INTO audit (note) VALUES (%s)", (f"w{w} {r.random()}",))
    elif k == 11:
        cur.execute(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'done' "
            "ORDER BY claimed LIMIT 2)"
        )
    elif k == 12:
        cur.execute(
            "UPDATE accounts SET mood = 'busy', tags = array_append(tags, %s) "
            "WHERE id IN (SELECT id FROM accounts ORDER BY random() LIMIT 2)",
            (f"t{w}",),
        )
    else:
        cur.execute(
            "UPDATE accounts SET half = NULL, meta = NULL, blob = NULL WHERE id = %s", (r.randrange(1, 40),)
        )
    conn.commit()
    return "ok"


def worker(w):
    r = random.Random(w)
    n, rb, deadlocks, errors = 0, 0, 0, []
    deadline = time.time() + SECONDS
    with psycopg.connect(DSN) as conn:
        while time.time() < deadline:
            try:
                with conn.cursor() as cur:
                    if op(cur, conn, w, r) == "rolled_back":
                        rb += 1
                n += 1
            except psycopg.Error as e:
                conn.rollback()
                # A deadlock between two workers (the server picks a victim, as
                # it would directly) is the application's own: counted.
                if e.sqlstate == "40P01":
                    deadlocks += 1
                else:
                    errors.append(str(e).strip())
        # A write on the table without a key: mirrored as a statement.
        with conn.cursor() as cur:
            cur.execute("UPDATE audit SET note = note || '!' WHERE note LIKE %s", (f"w{w} %",))
        conn.commit()
    with lock:
        report["ops"] += n
        report["rolled_back"] += rb
        report["deadlocks"] += deadlocks
        report["errors"] += errors


threads = [threading.Thread(target=worker, args=(w,)) for w in range(1, WORKERS + 1)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(report))
