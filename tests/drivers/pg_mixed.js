// The mixed write workload with node-postgres (parameters, so the extended
// protocol; some statements named, so prepared once per connection).
// Prints a JSON report of what ran.
const { Client } = require('pg');

const [dsn, workers, seconds] = [process.argv[2], +process.argv[3], +process.argv[4]];
// A deadlock between two workers (the server picks a victim, as it would
// directly) is the application's own: counted, rolled back, not an error.
const report = { ops: 0, rolled_back: 0, deadlocks: 0, errors: [] };

function rng(seed) {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 4294967296; };
}

async function op(c, w, r) {
  const k = Math.floor(r() * 14);
  const n = (m) => Math.floor(r() * m);
  switch (k) {
    case 0:
      await c.query({
        name: 'acct', text: 'INSERT INTO accounts (balance, tags, meta, blob, half, mood) ' +
          'VALUES ($1, $2, $3, $4, $5, $6::mood) RETURNING id, owner, opened',
        values: [(n(199998) - 99999) / 100, [`w${w}`, 'x y'], { w, f: r(), s: 'it\'s "q"' },
          Buffer.from([0, 1, 2, 255, w % 256]), r(), r() < 0.5 ? 'calm' : 'busy'],
      });
      return 'ok';
    case 1:
      await c.query({ name: 'ctr', text: 'INSERT INTO counters (k, n) VALUES ($1, 1) ' +
        'ON CONFLICT (k) DO UPDATE SET n = counters.n + 1, at = now() RETURNING n', values: [`c${n(17)}`] });
      return 'ok';
    case 2:
      await c.query('INSERT INTO jobs (payload) VALUES ($1)', [{ by: w }]);
      return 'ok';
    case 3:
      await c.query({ name: 'claim', text: "UPDATE jobs SET state = 'claimed', worker = $1, claimed = clock_timestamp() " +
        "WHERE id = (SELECT id FROM jobs WHERE state = 'new' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
        values: [w] });
      return 'ok';
    case 4:
      await c.query('UPDATE accounts SET balance = balance + $1, touched = clock_timestamp(), score = random() ' +
        'WHERE id = (SELECT max(id) FROM accounts)', [(n(1000) - 500) / 10]);
      return 'ok';
    case 5:
      await c.query('DELETE FROM events WHERE id = (SELECT id FROM events ORDER BY at LIMIT 1)');
      return 'ok';
    case 6:
      await c.query("INSERT INTO events (account, kind, amount) SELECT id, 'interest', balance * 0.01 " +
        'FROM accounts ORDER BY id DESC LIMIT 3');
      return 'ok';
    case 7:
      await c.query("UPDATE jobs SET state = 'done', payload = jobs.payload || jsonb_build_object('owner', a.owner) " +
        "FROM accounts a WHERE jobs.worker = $1 AND jobs.state = 'claimed' AND a.id = jobs.id % 20 + 1", [w]);
      return 'ok';
    case 8:
      await c.query('BEGIN');
      await c.query('INSERT INTO accounts (balance) VALUES ($1) RETURNING id', [1.5]);
      await c.query('UPDATE counters SET n = n + 1000 WHERE k = $1', [`c${n(17)}`]);
      await c.query('ROLLBACK');
      return 'rolled_back';
    case 9: {
      let a = 1 + n(20), b = 1 + n(20);
      if (a === b) b = (a % 20) + 1;
      [a, b] = [Math.min(a, b), Math.max(a, b)];
      await c.query('BEGIN');
      await c.query('UPDATE accounts SET balance = balance - 1 WHERE id = $1', [a]);
      await c.query('UPDATE accounts SET balance = balance + 1 WHERE id = $1', [b]);
      await c.query("INSERT INTO events (account, kind, amount) VALUES ($1, 'transfer', 1) RETURNING id, at", [b]);
      await c.query('COMMIT');
      return 'ok';
    }
    case 10:
      await c.query('INSERT INTO audit (note) VALUES ($1)', [`w${w} ${r()}`]);
      return 'ok';
    case 11:
      await c.query("DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'done' ORDER BY claimed LIMIT 2)");
      return 'ok';
    case 12:
      await c.query("UPDATE accounts SET mood = 'busy', tags = array_append(tags, $1) " +
        'WHERE id IN (SELECT id FROM accounts ORDER BY random() LIMIT 2)', [`t${w}`]);
      return 'ok';
    default:
      await c.query('UPDATE accounts SET half = NULL, meta = NULL, blob = NULL WHERE id = $1', [1 + n(40)]);
      return 'ok';
  }
}

async function worker(w) {
  const c = new Client({ connectionString: dsn });
  await c.connect();
  const r = rng(w * 7919);
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    try {
      if ((await op(c, w, r)) === 'rolled_back') report.rolled_back += 1;
      report.ops += 1;
    } catch (e) {
      if (e.code === '40P01') report.deadlocks += 1;
      else report.errors.push(String(e.message));
      try { await c.query('ROLLBACK'); } catch (_) { /* not in a transaction */ }
    }
  }
  await c.query("UPDATE audit SET note = note || '!' WHERE note LIKE $1", [`w${w} %`]);
  await c.end();
}

(async () => {
  const ws = [];
  for (let w = 1; w <= workers; w += 1) ws.push(worker(w));
  await Promise.all(ws);
  console.log(JSON.stringify(report));
})().catch((e) => { console.error(e); process.exit(1); });
