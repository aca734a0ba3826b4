"""asyncpg workload (Parse + Describe + Flush before Bind/Execute/Sync; named
statements cached per connection; executemany)."""
import asyncio
import json
import sys

import asyncpg

DSN, WORKERS, STEPS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


async def worker(w, out):
    conn = await asyncpg.connect(DSN)
    c, r, n_items = [], [], 0
    for step in range(STEPS):
        base = w * 1000000 + step * 10
        a, b = sorted(((w + step) % 8 + 1, (w + step + 3) % 8 + 1))
        tr = conn.transaction()
        await tr.start()
        await conn.execute(
            "INSERT INTO ledger (id, worker, n, amount, note) VALUES ($1, $2, $3, $4, $5)",
            base, w, step, step * 1.25, f"w{w}",
        )
        await conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = $1", a)
        await conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = $1", b)
        if step % 3 == 0:
            await tr.rollback()
            r.append(base)
        else:
            await tr.commit()
            c.append(base)
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO ledger (id, worker, n, amount) VALUES ($1, $2, $3, $4)",
                base + 1, w, step, 1,
            )
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO ledger (id, worker, n, amount) VALUES ($1, $2, $3, $4)",
                        base + 1, w, step, 2,
                    )
            except asyncpg.UniqueViolationError:
                pass
            await conn.execute(
                "INSERT INTO ledger (id, worker, n, amount) VALUES ($1, $2, $3, $4)",
                base + 2, w, step, 3,
            )
        c += [base + 1, base + 2]
        # executemany outside a transaction: asyncpg runs it as one batch.
        await conn.executemany(
            "INSERT INTO ledger (id, worker, n, amount) VALUES ($1, $2, $3, $4)",
            [(base + k, w, step, k) for k in (3, 4, 5)],
        )
        c += [base + 3, base + 4, base + 5]
        await conn.execute("INSERT INTO items (id, worker) VALUES ($1, $2)", base, w)
        n_items += 1
        await conn.execute("UPDATE items SET qty = qty + 1 WHERE id = $1", base)
        await conn.execute(
            "INSERT INTO ledger (id, worker, n, amount) VALUES ($1, $2, $3, $4)",
            base + 6, w, step, 6,
        )
        c.append(base + 6)
    await conn.close()
    out.append((c, r, n_items))


async def main():
    out = []
    await asyncio.gather(*(worker(w, out) for w in range(WORKERS)))
    committed = [i for c, _, _ in out for i in c]
    rolled_back = [i for _, r, _ in out for i in r]
    print(json.dumps({"committed": committed, "rolled_back": rolled_back,
                      "items": sum(n for _, _, n in out)}))


asyncio.run(main())
