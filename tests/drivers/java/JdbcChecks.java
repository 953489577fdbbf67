import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.Date;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;

/**
 * pgJDBC as applications use it: prepared statements past prepareThreshold (so the driver
 * switches to server-prepared statements and binary results), DatabaseMetaData, fetchSize
 * cursors inside a transaction, transactions and SQLSTATEs.
 *
 * <p>Usage: java -cp postgresql.jar:. JdbcChecks HOST PORT USER PASSWORD DBNAME
 *
 * <p>Prints one JSON object per check, like drivers.py: {"check": NAME, "ok": true, "value": [...]}
 * or {"check": NAME, "ok": false, "error": TEXT}. Values are lists of strings, compared by
 * tests/e2e/drivers.rs with the same check's values on PostgreSQL 15.
 */
public class JdbcChecks {
    interface Check {
        List<String> run(Connection c) throws Exception;
    }

    static String url;
    static Properties props = new Properties();

    public static void main(String[] args) throws Exception {
        url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[4];
        props.setProperty("user", args[2]);
        props.setProperty("password", args[3]);
        run("jdbc_prepared_statements_binary_results", JdbcChecks::preparedStatements);
        run("jdbc_transactions_and_sqlstates", JdbcChecks::transactions);
        run("jdbc_fetch_size_cursor", JdbcChecks::fetchSizeCursor);
        run("jdbc_database_metadata", JdbcChecks::metadata);
        run("jdbc_primary_keys_and_index_info", JdbcChecks::keysAndIndexes);
    }

    static void run(String name, Check check) {
        String line;
        try (Connection c = DriverManager.getConnection(url, props)) {
            List<String> value = check.run(c);
            StringBuilder sb = new StringBuilder();
            for (String v : value) {
                sb.append(sb.length() == 0 ? "" : ", ").append(json(v));
            }
            line = "{\"check\": " + json(name) + ", \"ok\": true, \"value\": [" + sb + "]}";
        } catch (Throwable e) {
            line = "{\"check\": " + json(name) + ", \"ok\": false, \"error\": " + json(e.toString()) + "}";
        }
        System.out.println(line);
        System.out.flush();
    }

    static String json(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            if (ch == '"' || ch == '\\') {
                sb.append('\\').append(ch);
            } else if (ch < 0x20) {
                sb.append(String.format("\\u%04x", (int) ch));
            } else {
                sb.append(ch);
            }
        }
        return sb.append('"').toString();
    }

    static void expect(Object got, Object want, String what) {
        if (!String.valueOf(got).equals(String.valueOf(want))) {
            throw new AssertionError(what + ": got " + got + ", wanted " + want);
        }
    }

    static List<String> preparedStatements(Connection c) throws Exception {
        try (Statement s = c.createStatement()) {
            s.execute("CREATE TABLE jd_types (id int primary key, i8 bigint, n numeric(12,3), "
                    + "f8 double precision, t text, b boolean, d date, ts timestamp, by bytea)");
        }
        List<String> out = new ArrayList<>();
        try (PreparedStatement ins = c.prepareStatement(
                "INSERT INTO jd_types VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
            for (int i = 0; i < 8; i++) {
                ins.setInt(1, i);
                ins.setLong(2, 1L << (40 + i));
                ins.setBigDecimal(3, new BigDecimal("-" + i + ".125"));
                ins.setDouble(4, i / 8.0);
                ins.setString(5, "row " + i);
                ins.setBoolean(6, i % 2 == 0);
                ins.setDate(7, Date.valueOf("2024-03-" + (10 + i)));
                ins.setTimestamp(8, Timestamp.valueOf("2024-03-10 12:00:0" + i + ".5"));
                ins.setBytes(9, new byte[] {(byte) i, (byte) 0xff});
                expect(ins.executeUpdate(), 1, "rows inserted");
            }
        }
        // Past prepareThreshold (5) pgJDBC uses a named server statement and binary results.
        try (PreparedStatement sel = c.prepareStatement("SELECT * FROM jd_types WHERE id = ?")) {
            for (int i = 0; i < 8; i++) {
                sel.setInt(1, i);
                try (ResultSet rs = sel.executeQuery()) {
                    expect(rs.next(), true, "a row for id " + i);
                    expect(rs.getLong(2), 1L << (40 + i), "bigint");
                    expect(rs.getBigDecimal(3), new BigDecimal("-" + i + ".125"), "numeric");
                    expect(rs.getDouble(4), i / 8.0, "double");
                    expect(rs.getString(5), "row " + i, "text");
                    expect(rs.getBoolean(6), i % 2 == 0, "boolean");
                    expect(rs.getDate(7), Date.valueOf("2024-03-" + (10 + i)), "date");
                    expect(rs.getTimestamp(8), Timestamp.valueOf("2024-03-10 12:00:0" + i + ".5"), "timestamp");
                    expect(Arrays.toString(rs.getBytes(9)), Arrays.toString(new byte[] {(byte) i, (byte) 0xff}), "bytea");
                    out.add(rs.getInt(1) + "|" + rs.getString(3) + "|" + rs.getString(7) + "|" + rs.getString(8));
                }
            }
            ResultSetMetaData md = sel.getMetaData();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                out.add(md.getColumnName(i) + ":" + md.getColumnTypeName(i) + ":" + md.getColumnType(i));
            }
        }
        return out;
    }

    static List<String> transactions(Connection c) throws Exception {
        List<String> out = new ArrayList<>();
        try (Statement s = c.createStatement()) {
            s.execute("CREATE TABLE jd_tx (id int primary key, v text)");
            c.setAutoCommit(false);
            s.execute("INSERT INTO jd_tx VALUES (1, 'a')");
            c.rollback();
            s.execute("INSERT INTO jd_tx VALUES (2, 'b')");
            c.commit();
            try {
                s.execute("INSERT INTO jd_tx VALUES (2, 'again')");
                throw new AssertionError("duplicate key accepted");
            } catch (SQLException e) {
                out.add(e.getSQLState());
            }
            try {
                s.execute("SELECT 1");
                throw new AssertionError("statement accepted in a failed transaction");
            } catch (SQLException e) {
                out.add(e.getSQLState());
            }
            c.rollback();
            c.setAutoCommit(true);
            try (ResultSet rs = s.executeQuery("SELECT id, v FROM jd_tx ORDER BY id")) {
                while (rs.next()) {
                    out.add(rs.getInt(1) + "=" + rs.getString(2));
                }
            }
        }
        expect(out, "[23505, 25P02, 2=b]", "states and rows");
        return out;
    }

    static List<String> fetchSizeCursor(Connection c) throws Exception {
        try (Statement s = c.createStatement()) {
            s.execute("CREATE TABLE jd_many (id int primary key, v text)");
            s.execute("INSERT INTO jd_many SELECT g, 'v' || g FROM generate_series(1, 95) AS g");
        }
        c.setAutoCommit(false);
        List<String> out = new ArrayList<>();
        try (PreparedStatement p = c.prepareStatement("SELECT id, v FROM jd_many WHERE id > ? ORDER BY id")) {
            // Inside a transaction, a fetch size makes pgJDBC read the portal 10 rows at a time.
            p.setFetchSize(10);
            p.setInt(1, 3);
            long sum = 0;
            int rows = 0;
            try (ResultSet rs = p.executeQuery()) {
                while (rs.next()) {
                    sum += rs.getInt(1);
                    rows++;
                    if (rows <= 2) {
                        out.add(rs.getString(2));
                    }
                }
            }
            expect(rows, 92, "rows through the cursor");
            out.add(rows + " rows, sum " + sum);
        }
        c.commit();
        return out;
    }

    static List<String> metadata(Connection c) throws Exception {
        try (Statement s = c.createStatement()) {
            s.execute("CREATE TABLE jd_items (id int primary key, name varchar(40) not null, "
                    + "price numeric(10,2), added timestamp)");
            s.execute("CREATE UNIQUE INDEX jd_items_name_key ON jd_items (name)");
            s.execute("CREATE VIEW jd_cheap AS SELECT id, name FROM jd_items WHERE price < 10");
        }
        DatabaseMetaData md = c.getMetaData();
        List<String> out = new ArrayList<>();
        try (ResultSet rs = md.getTables(null, "public", "jd_%", new String[] {"TABLE", "VIEW"})) {
            while (rs.next()) {
                out.add("table " + rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME") + " " + rs.getString("TABLE_TYPE"));
            }
        }
        try (ResultSet rs = md.getColumns(null, "public", "jd_items", "%")) {
            while (rs.next()) {
                out.add("column " + rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + " "
                        + rs.getInt("DATA_TYPE") + " " + rs.getInt("COLUMN_SIZE") + " "
                        + rs.getInt("NULLABLE") + " " + rs.getInt("ORDINAL_POSITION"));
            }
        }
        expect(out.contains("column price numeric 2 10 1 3"), true, "a column listed");
        return out;
    }

    /** Reads the keys and indexes of the table that jdbc_database_metadata created. */
    static List<String> keysAndIndexes(Connection c) throws Exception {
        List<String> out = new ArrayList<>();
        try (ResultSet rs = c.getMetaData().getPrimaryKeys(null, "public", "jd_items")) {
            while (rs.next()) {
                out.add("pk " + rs.getString("COLUMN_NAME") + " " + rs.getInt("KEY_SEQ") + " " + rs.getString("PK_NAME"));
            }
        }
        expect(out.contains("pk id 1 jd_items_pkey"), true, "primary key listed");
        try (ResultSet rs = c.getMetaData().getIndexInfo(null, "public", "jd_items", false, false)) {
            while (rs.next()) {
                out.add("index " + rs.getString("INDEX_NAME") + " " + rs.getBoolean("NON_UNIQUE") + " "
                        + rs.getString("COLUMN_NAME") + " " + rs.getInt("ORDINAL_POSITION"));
            }
        }
        expect(out.size(), 3, "primary key and indexes listed");
        return out;
    }
}
