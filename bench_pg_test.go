package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"ipnd/internal/pgtest"
	"ipnd/ipn/gateway"
	"ipnd/metrics"
	"ipnd/public"
	"ipnd/store/pg"
)

// The postgres half of make bench (BenchmarkIngest, BenchmarkE2E): each
// benchmark starts a throwaway cluster of its own (internal/pgtest, the
// server's defaults: fsync and synchronous_commit on) on this machine,
// so that the server's CPU and disk are the same machine's as ipnd's and
// the bare server's. Without server binaries the half is left out with a
// line saying so (make bench is not run in CI).

// benchPG starts the cluster of a benchmark's postgres half, or returns
// why it cannot.
func benchPG(b *testing.B) (*pgtest.Cluster, string) {
	b.Helper()
	bin, err := pgtest.Bin()
	if err != nil {
		return nil, err.Error()
	}
	if _, err := os.Stat(filepath.Join(bin, "pg_ctl")); err != nil {
		return nil, fmt.Sprintf("no PostgreSQL server binaries: %v", err)
	}
	return pgtest.Start(b), ""
}

// pgNotMeasured says that the postgres half of what was not measured.
func pgNotMeasured(what, why string) {
	fmt.Printf("\nNOTE: %s on postgres was NOT measured: %s\n", what, why)
}

// writeBenchConfig is writeTestConfig on the backend named by dsn (""
// bbolt, whatever IPND_TEST_BACKEND says: the tables name their backend).
func writeBenchConfig(tb testing.TB, dir, dsn, extra string) string {
	tb.Helper()
	if dsn != "" {
		return writePGTestConfig(tb, dir, "dsn = "+strconv.Quote(dsn)+"\n", extra)
	}
	cfg := filepath.Join(dir, "ipnd.toml")
	body := "[server]\nlisten = \"127.0.0.1:0\"\nrate_limit = 0\n" +
		"[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n" +
		"[store]\npath = \"" + filepath.Join(dir, "ipnd.db") + "\"\n" + extra
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// pgIngestServer is ingestServer on PostgreSQL: the receiver as serve
// wires it over the store of the database at dsn, no pipeline behind.
func pgIngestServer(b *testing.B, dsn string, gw gateway.Gateway, m *metrics.Metrics) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := pg.Open(ctx, dsn, pg.Options{})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(public.NewReceiver(public.ReceiverOptions{Gateways: []gateway.Gateway{gw}, Store: db, Observer: m}).Handler())
	b.Cleanup(func() {
		srv.Close()
		db.Close()
	})
	return srv.URL + "/ipn/" + gw.Name()
}

// pgVersion is the server's version (for the table's header).
func pgVersion(dsn string) string {
	rows, err := pgQuery(dsn, `SHOW server_version`)
	if err != nil || len(rows) == 0 {
		return "version unknown"
	}
	return "PostgreSQL " + rows[0][0]
}

// pgUsage is what a cluster's server processes have used: CPU time (user
// and system) of the postmaster, of its children that exited and of its
// live children, and the bytes its live processes wrote to disk.
type pgUsage struct {
	cpu     time.Duration
	written int64
}

// pgServerUsage reads /proc for the server of the cluster listening on
// port (zero when it is not found).
func pgServerUsage(port int) pgUsage {
	pm := postmasterPID(port)
	if pm == "" {
		return pgUsage{}
	}
	var u pgUsage
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		pid := filepath.Base(filepath.Dir(p))
		f := procStat(pid)
		if len(f) < 15 || (pid != pm && f[1] != pm) {
			continue
		}
		// After the command: state ppid ... utime(14) stime(15)
		// cutime(16) cstime(17), in clock ticks (USER_HZ, 100 on Linux).
		ticks := atoi(f[11]) + atoi(f[12])
		if pid == pm {
			ticks += atoi(f[13]) + atoi(f[14])
		}
		u.cpu += time.Duration(ticks) * 10 * time.Millisecond
		u.written += procWriteBytes(pid)
	}
	return u
}

func atoi(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }

// procStat is /proc/pid/stat's fields after the command (state first).
func procStat(pid string) []string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func procWriteBytes(pid string) int64 {
	b, _ := os.ReadFile("/proc/" + pid + "/io")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			return atoi(v)
		}
	}
	return 0
}

// postmasterPID finds the postgres process started with -p port (pg_ctl
// passes the cluster's options on its command line).
func postmasterPID(port int) string {
	cmds, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	want := strconv.Itoa(port)
	for _, c := range cmds {
		b, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "postgres" {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-p" && args[i+1] == want {
				return filepath.Base(filepath.Dir(c))
			}
		}
	}
	return ""
}

// pgQuery runs sql on the database at dsn, returning its rows as text.
func pgQuery(dsn, sql string, args ...any) ([][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = fmt.Sprint(v)
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// pgEnableStatements loads pg_stat_statements into the cluster (a
// restart) for IPND_E2E_PGSTAT.
func pgEnableStatements(b *testing.B, c *pgtest.Cluster) {
	b.Helper()
	if _, err := pgQuery(c.DSN(), `ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`); err != nil {
		b.Fatal(err)
	}
	c.Stop()
	c.Start()
	if _, err := pgQuery(c.DSN(), `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		b.Fatal(err)
	}
}

// pgStatements is the top of pg_stat_statements for the database at dsn
// by time spent.
func pgStatements(c *pgtest.Cluster, dsn string) string {
	db := dsn[strings.LastIndexByte(dsn, '/')+1:]
	db, _, _ = strings.Cut(db, "?")
	rows, err := pgQuery(c.DSN(), `SELECT s.calls, round(s.total_exec_time)::bigint, round(1000*s.total_exec_time/greatest(s.calls,1))::bigint,
		round(s.max_exec_time)::bigint, s.rows, round(100*s.total_exec_time/sum(s.total_exec_time) OVER ())::int, s.query
		FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1
		ORDER BY s.total_exec_time DESC LIMIT 14`, db)
	if err != nil {
		return "  pg_stat_statements: " + err.Error() + "\n"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "  pg_stat_statements (execution time in the server, round trips not included):\n  %9s %9s %9s %7s %9s %5s  %s\n",
		"calls", "total ms", "mean µs", "max ms", "rows", "share", "statement")
	for _, r := range rows {
		q := strings.Join(strings.Fields(r[6]), " ")
		if len(q) > 110 {
			q = q[:110] + "…"
		}
		fmt.Fprintf(&sb, "  %9s %9s %9s %7s %9s %4s%%  %s\n", r[0], r[1], r[2], r[3], r[4], r[5], q)
	}
	return sb.String()
}

// pgResetStatements empties pg_stat_statements before a run.
func pgResetStatements(c *pgtest.Cluster) {
	pgQuery(c.DSN(), `SELECT pg_stat_statements_reset()`)
}

// pgSize is the size of the database at dsn, less that of an empty one
// (template1), and its notifications.
func pgSize(dsn string) (notifications, bytes int64, err error) {
	rows, err := pgQuery(dsn, `SELECT coalesce(max(id), 0), pg_database_size(current_database()) - pg_database_size('template1') FROM notifications`)
	if err != nil {
		return 0, 0, err
	}
	return atoi(rows[0][0]), atoi(rows[0][1]), nil
}
