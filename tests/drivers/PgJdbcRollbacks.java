// Ten pgjdbc transactions (autocommit off), alternately committed and rolled
// back; prints how many rows the table holds after, read back on the same
// connection. java -cp postgresql.jar PgJdbcRollbacks.java <jdbc-url>
import java.sql.*;

public class PgJdbcRollbacks {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO alternate (id) VALUES (?)")) {
                for (int i = 0; i < 10; i++) {
                    ins.setInt(1, i);
                    ins.executeUpdate();
                    if (i % 2 == 0) c.commit(); else c.rollback();
                }
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*) FROM alternate")) {
                r.next();
                System.out.println(r.getLong(1));
            }
            c.commit();
        }
    }
}
