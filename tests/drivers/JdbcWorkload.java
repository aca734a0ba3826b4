// A JDBC workload, the same for every JDBC driver: autocommit off, savepoints
// with a failing insert rolled back to, executeBatch, statements reused,
// inserts relying on column defaults, autocommit statements.
// pgjdbc: BEGIN travels in the same batch as each transaction's first
// statement; statements become named (S_1, ...) after prepareThreshold (5)
// executions. MariaDB Connector/J with useServerPrepStmts=true: server-side
// prepared statements (binary protocol).
// java -cp <driver.jar> JdbcWorkload.java <jdbc-url> <workers> <steps>
import java.sql.*;
import java.util.*;

public class JdbcWorkload {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        int workers = Integer.parseInt(args[1]);
        int steps = Integer.parseInt(args[2]);
        List<Long> committed = Collections.synchronizedList(new ArrayList<>());
        List<Long> rolledBack = Collections.synchronizedList(new ArrayList<>());
        int[] items = new int[1];
        List<Throwable> errors = Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (int w = 0; w < workers; w++) {
            final int wk = w;
            Thread t = new Thread(() -> {
                try {
                    work(url, wk, steps, committed, rolledBack, items);
                } catch (Throwable e) {
                    errors.add(e);
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join();
        if (!errors.isEmpty()) {
            errors.get(0).printStackTrace();
            System.exit(1);
        }
        System.out.println("{\"committed\": " + committed + ", \"rolled_back\": " + rolledBack
                + ", \"items\": " + items[0] + "}");
    }

    static void work(String url, int w, int steps, List<Long> committed, List<Long> rolledBack,
                     int[] items) throws SQLException {
        try (Connection c = DriverManager.getConnection(url)) {
            c.setAutoCommit(false);
            PreparedStatement ins = c.prepareStatement(
                "INSERT INTO ledger (id, worker, n, amount, note) VALUES (?, ?, ?, ?, ?)");
            PreparedStatement upd = c.prepareStatement(
                "UPDATE accounts SET balance = balance + ? WHERE id = ?");
            PreparedStatement item = c.prepareStatement(
                "INSERT INTO items (id, worker) VALUES (?, ?)");
            for (int step = 0; step < steps; step++) {
                long base = w * 1000000L + step * 10L;
                int a = Math.min((w + step) % 8 + 1, (w + step + 3) % 8 + 1);
                int b = Math.max((w + step) % 8 + 1, (w + step + 3) % 8 + 1);
                insert(ins, base, w, step, step * 1.25, "w" + w);
                upd.setInt(1, -1); upd.setInt(2, a); upd.executeUpdate();
                upd.setInt(1, 1); upd.setInt(2, b); upd.executeUpdate();
                if (step % 3 == 0) { c.rollback(); rolledBack.add(base); }
                else { c.commit(); committed.add(base); }
                // Savepoint, a failing insert, rolled back to.
                insert(ins, base + 1, w, step, 1, null);
                Savepoint sp = c.setSavepoint();
                try {
                    insert(ins, base + 1, w, step, 2, null);
                } catch (SQLException e) {
                    // A duplicate key: SQLSTATE 23505 (PostgreSQL), error 1062 (MariaDB).
                    if (!"23505".equals(e.getSQLState()) && e.getErrorCode() != 1062) throw e;
                    c.rollback(sp);
                }
                insert(ins, base + 2, w, step, 3, null);
                c.commit();
                committed.add(base + 1); committed.add(base + 2);
                // executeBatch.
                for (int k = 3; k <= 5; k++) {
                    ins.setLong(1, base + k); ins.setInt(2, w); ins.setInt(3, step);
                    ins.setBigDecimal(4, java.math.BigDecimal.valueOf(k)); ins.setString(5, null);
                    ins.addBatch();
                }
                ins.executeBatch();
                c.commit();
                for (int k = 3; k <= 5; k++) committed.add(base + k);
                // Relying on defaults.
                item.setLong(1, base); item.setInt(2, w); item.executeUpdate();
                c.commit();
                synchronized (items) { items[0]++; }
                // Autocommit for one statement.
                c.setAutoCommit(true);
                insert(ins, base + 6, w, step, 6, null);
                committed.add(base + 6);
                c.setAutoCommit(false);
            }
        }
    }

    static void insert(PreparedStatement ins, long id, int w, int n, double amount, String note)
            throws SQLException {
        ins.setLong(1, id); ins.setInt(2, w); ins.setInt(3, n);
        ins.setBigDecimal(4, java.math.BigDecimal.valueOf(amount).setScale(2, java.math.RoundingMode.HALF_UP));
        ins.setString(5, note);
        ins.executeUpdate();
    }
}
