// node-postgres workload: Parse/Bind/Describe/Execute/Sync per parameterized
// query, named statements where a query is given a name.
// node pg_node.js <connection-uri> <workers> <steps>
const { Client } = require('pg');

async function worker(uri, w, steps, out) {
  const c = new Client({ connectionString: uri });
  await c.connect();
  const ins = 'INSERT INTO ledger (id, worker, n, amount, note) VALUES ($1, $2, $3, $4, $5)';
  for (let step = 0; step < steps; step++) {
    const base = w * 1000000 + step * 10;
    const [a, b] = [(w + step) % 8 + 1, (w + step + 3) % 8 + 1].sort((x, y) => x - y);
    await c.query('BEGIN');
    await c.query(ins, [base, w, step, step * 1.25, `w${w}`]);
    await c.query('UPDATE accounts SET balance = balance - 1 WHERE id = $1', [a]);
    await c.query('UPDATE accounts SET balance = balance + 1 WHERE id = $1', [b]);
    if (step % 3 === 0) { await c.query('ROLLBACK'); out.rolled_back.push(base); }
    else { await c.query('COMMIT'); out.committed.push(base); }
    await c.query('BEGIN');
    await c.query(ins, [base + 1, w, step, 1, null]);
    await c.query('SAVEPOINT s');
    try { await c.query(ins, [base + 1, w, step, 2, null]); }
    catch (e) { if (e.code !== '23505') throw e; await c.query('ROLLBACK TO SAVEPOINT s'); }
    await c.query(ins, [base + 2, w, step, 3, null]);
    await c.query('COMMIT');
    out.committed.push(base + 1, base + 2);
    // Pipelined: queries queued without waiting.
    await Promise.all([3, 4, 5].map((k) =>
      c.query({ name: 'ledger-insert', text: ins, values: [base + k, w, step, k, null] })));
    out.committed.push(base + 3, base + 4, base + 5);
    await c.query({ name: 'item-insert', text: 'INSERT INTO items (id, worker) VALUES ($1, $2)', values: [base, w] });
    out.items += 1;
    await c.query(ins, [base + 6, w, step, 6, null]);
    out.committed.push(base + 6);
  }
  await c.end();
}

(async () => {
  const [uri, workers, steps] = [process.argv[2], +process.argv[3], +process.argv[4]];
  const out = { committed: [], rolled_back: [], items: 0 };
  await Promise.all([...Array(workers).keys()].map((w) => worker(uri, w, steps, out)));
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
