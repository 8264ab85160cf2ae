// Package pgtest runs a throwaway PostgreSQL cluster for tests: initdb in
// a temporary directory, a server on a free loopback port, removed when
// the test ends. It uses the server binaries of Debian's postgresql
// package (/usr/lib/postgresql/<major>/bin) or those on PATH; as root it
// runs them as the postgres user, since PostgreSQL refuses to run as
// root.
package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Cluster is one running (or stopped) throwaway server.
type Cluster struct {
	t    testing.TB
	bin  string // directory of initdb, pg_ctl, postgres
	root string // temporary directory: data/ and the socket
	data string
	Port int
	uid  int // run as this user when running as root (-1: as ourselves)
	gid  int
}

// DSN is the URL of the cluster's database "ipnd" as user "ipnd".
func (c *Cluster) DSN() string {
	return fmt.Sprintf("postgres://ipnd@127.0.0.1:%d/ipnd?sslmode=disable", c.Port)
}

// Bin finds the PostgreSQL server binaries, or says why there are none.
func Bin() (string, error) {
	if d := os.Getenv("IPND_PG_BIN"); d != "" {
		return d, nil
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r // Debian links pg_ctl, not createdb, into /usr/local/bin
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "createdb")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (pg_ctl): apt-get install postgresql, or set IPND_PG_BIN")
}

func major(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start creates and starts a cluster; it stops and removes it when the
// test ends. Without server binaries the test fails (never skips): the
// Makefile decides whether PostgreSQL tests run at all.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin, err := Bin()
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user to run the server: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	sweep(bin, uid, gid)
	root, err := os.MkdirTemp("", "ipnd-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, bin: bin, root: root, data: filepath.Join(root, "data"), uid: uid, gid: gid}
	t.Cleanup(func() {
		c.stop("immediate")
		os.RemoveAll(root)
	})
	if err := os.WriteFile(filepath.Join(root, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		if err := os.Chown(root, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := c.run("initdb", "-D", c.data, "-U", "ipnd", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	c.Start()
	if out, err := c.run("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "ipnd", "ipnd"); err != nil {
		t.Fatalf("createdb: %v\n%s", err, out)
	}
	return c
}

// Start starts the server (again) on its port; the first start picks a
// free port.
func (c *Cluster) Start() {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		if c.Port == 0 || attempt > 0 {
			c.Port = freePort(c.t)
		}
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", c.Port, c.root)
		out, err := c.run("pg_ctl", "-D", c.data, "-l", filepath.Join(c.root, "log"), "-w", "-t", "60", "-o", opts, "start")
		if err == nil {
			return
		}
		if attempt >= 3 {
			log, _ := os.ReadFile(filepath.Join(c.root, "log"))
			c.t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
		}
	}
}

// Stop stops the server at once (connections are cut, as when the
// database machine goes away); Start brings it back on the same port.
func (c *Cluster) Stop() {
	c.t.Helper()
	if out, err := c.stop("immediate"); err != nil {
		c.t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

func (c *Cluster) stop(mode string) ([]byte, error) {
	if _, err := os.Stat(filepath.Join(c.data, "postmaster.pid")); err != nil {
		return nil, nil
	}
	return c.run("pg_ctl", "-D", c.data, "-m", mode, "-w", "stop")
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.root
	cmd.Env = append(os.Environ(), "PGHOST=127.0.0.1", "LC_ALL=C")
	if c.uid >= 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(c.bin, name)}, args...)...)
		cmd.Dir = c.root
		cmd.Env = append(os.Environ(), "LC_ALL=C")
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.Bytes(), err
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		return out.Bytes(), fmt.Errorf("%s did not finish in 2 minutes", name)
	}
}

// ownerFile, in a cluster's directory, holds the pid of the process that
// started it: a test binary that dies without its cleanups (a panic,
// -timeout, kill -9) leaves its server running, which the next Start
// stops and removes (sweep).
const ownerFile = "owner.pid"

// sweep stops and removes the clusters in the temporary directory whose
// starting process is gone.
func sweep(bin string, uid, gid int) {
	roots, _ := filepath.Glob(filepath.Join(os.TempDir(), "ipnd-pg-*"))
	for _, root := range roots {
		b, err := os.ReadFile(filepath.Join(root, ownerFile))
		if err != nil {
			continue // not a cluster, or one from before owner files
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // its test binary still runs
		}
		c := &Cluster{bin: bin, root: root, data: filepath.Join(root, "data"), uid: uid, gid: gid}
		c.stop("immediate")
		os.RemoveAll(root)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := strings.Cut(l.Addr().String(), ":")
	n, _ := strconv.Atoi(p)
	return n
}

// Database creates the database name on the cluster (owner ipnd) and
// returns its URL.
func (c *Cluster) Database(name string) (string, error) {
	if out, err := c.run("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port), "-U", "ipnd", name); err != nil {
		return "", fmt.Errorf("createdb %s: %v\n%s", name, err, out)
	}
	return fmt.Sprintf("postgres://ipnd@127.0.0.1:%d/%s?sslmode=disable", c.Port, name), nil
}

// StartShared starts a cluster that outlives any one test: a test binary
// shares it (TestMain calls stop after the tests). Its failures are
// errors, not a test's.
func StartShared() (c *Cluster, stop func(), err error) {
	m := &mainTB{}
	stop = func() {
		for i := len(m.cleanups) - 1; i >= 0; i-- {
			m.cleanups[i]()
		}
	}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(sharedFailure)
			if !ok {
				panic(r)
			}
			stop()
			c, stop, err = nil, nil, errors.New(string(f))
		}
	}()
	return Start(m), stop, nil
}

// mainTB is the testing.TB of a shared cluster: its cleanups run at
// stop, a fatal failure panics with a sharedFailure that StartShared
// returns (only the methods Start and the cluster call are given).
type mainTB struct {
	testing.TB
	cleanups []func()
}

type sharedFailure string

func (m *mainTB) Helper()           {}
func (m *mainTB) Cleanup(f func())  { m.cleanups = append(m.cleanups, f) }
func (m *mainTB) Fatal(args ...any) { panic(sharedFailure(fmt.Sprint(args...))) }
func (m *mainTB) Fatalf(format string, args ...any) {
	panic(sharedFailure(fmt.Sprintf(format, args...)))
}
