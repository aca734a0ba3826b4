// mysql2 workload with execute() (server-side prepared statements, binary
// protocol): transactions that commit and roll back, savepoints, pipelined
// executes, inserts relying on column defaults.
// node my_mysql2.js <port> <password> <workers> <steps>
const mysql = require('mysql2/promise');

async function worker(port, password, w, steps, out) {
  const c = await mysql.createConnection({
    host: '127.0.0.1', port, user: 'app', password, database: 'app',
  });
  const ins = 'INSERT INTO ledger (id, worker, n, amount, note) VALUES (?, ?, ?, ?, ?)';
  for (let step = 0; step < steps; step++) {
    const base = w * 1000000 + step * 10;
    const [a, b] = [(w + step) % 8 + 1, (w + step + 3) % 8 + 1].sort((x, y) => x - y);
    await c.beginTransaction();
    await c.execute(ins, [base, w, step, step * 1.25, `w${w}`]);
    await c.execute('UPDATE accounts SET balance = balance - 1 WHERE id = ?', [a]);
    await c.execute('UPDATE accounts SET balance = balance + 1 WHERE id = ?', [b]);
    if (step % 3 === 0) { await c.rollback(); out.rolled_back.push(base); }
    else { await c.commit(); out.committed.push(base); }
    await c.beginTransaction();
    await c.execute(ins, [base + 1, w, step, 1, null]);
    await c.query('SAVEPOINT s');
    try { await c.execute(ins, [base + 1, w, step, 2, null]); }
    catch (e) { if (e.errno !== 1062) throw e; await c.query('ROLLBACK TO SAVEPOINT s'); }
    await c.execute(ins, [base + 2, w, step, 3, null]);
    await c.commit();
    out.committed.push(base + 1, base + 2);
    // Pipelined on one connection (mysql2 queues them).
    await Promise.all([3, 4, 5].map((k) => c.execute(ins, [base + k, w, step, k, null])));
    out.committed.push(base + 3, base + 4, base + 5);
    // Relying on UUID(), RAND(), UUID_SHORT() defaults through a prepared statement.
    await c.execute('INSERT INTO items (id, worker) VALUES (?, ?)', [base, w]);
    out.items += 1;
    await c.execute(ins, [base + 6, w, step, 6, null]);
    out.committed.push(base + 6);
  }
  await c.end();
}

(async () => {
  const [port, password, workers, steps] = [+process.argv[2], process.argv[3], +process.argv[4], +process.argv[5]];
  const out = { committed: [], rolled_back: [], items: 0 };
  await Promise.all([...Array(workers).keys()].map((w) => worker(port, password, w, steps, out)));
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
