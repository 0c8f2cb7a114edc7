package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestStatusSocket: `vipd -status` with no settings asks every vipd on the
// node through its socket (a real etcd on loopback behind two groups), one
// report per group, this node marked; a socket left by a killed vipd is
// named on stderr and skipped; with no vipd answering, nothing is printed
// and the caller reads the configuration.
func TestStatusSocket(t *testing.T) {
	t.Parallel()
	cli := loopbackEtcd(t)
	dir := t.TempDir()
	log := &logger{w: &lab.SyncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Group a has a holder (n1) and a candidate (n2, this node); group b
	// has nobody.
	a := startTestTerm(t, cli, "/vipd/a", "n1", rank{healthy: true}, nil)
	a.next(t, evElected, 5*time.Second)
	b := startTestTerm(t, cli, "/vipd/a", "n2", rank{healthy: true}, nil)
	b.queued(t, cli, b.keyOf(b.next(t, evGranted, 5*time.Second).lease))

	var paths []string
	for _, key := range []string{"/vipd/a", "/vipd/b"} {
		path := filepath.Join(dir, strings.ReplaceAll(key, "/", "_")+".sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		s := &statusSocket{ln: ln, cli: cli, key: key, name: "n2", endpoints: []string{"http://e"}, log: log}
		go s.serve(ctx)
		paths = append(paths, path)
	}
	// A socket whose vipd is gone: bound, never listened to by anyone.
	stale := filepath.Join(dir, "gone.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	var out, errOut bytes.Buffer
	code, ok := runLocalStatus(append(paths, stale), true, &out, &errOut)
	if !ok || code != exitRuntime {
		t.Fatalf("exit %d, answered %v; want 1 (group b has no holder)\n%s", code, ok, errOut.String())
	}
	var reps []statusReport
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil || len(reps) != 2 {
		t.Fatalf("want a JSON array of two reports: %v\n%s", err, out.String())
	}
	ra, rb := reps[0], reps[1]
	if ra.Key != "/vipd/a" || ra.Holder == nil || ra.Holder.Name != "n1" || ra.Holder.Version != release() ||
		len(ra.Candidates) != 1 || !ra.Candidates[0].Self || ra.Candidates[0].Name != "n2" {
		t.Errorf("group a: %+v", ra)
	}
	if rb.Key != "/vipd/b" || rb.Holder != nil || len(rb.Candidates) != 0 || rb.Error != "" {
		t.Errorf("group b: %+v", rb)
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], stale) || !strings.Contains(lines[1], "no holder of /vipd/b") {
		t.Errorf("stderr: want the stale socket named, then group b's missing holder:\n%s", errOut.String())
	}

	// For people: one report after the other.
	out.Reset()
	if code, _ := runLocalStatus(paths[:1], false, &out, &errOut); code != exitOK ||
		!strings.Contains(out.String(), "group      /vipd/a") || !strings.Contains(out.String(), "n2 *") {
		t.Errorf("exit %d:\n%s", code, out.String())
	}

	// Nobody answers: nothing printed, the caller reads the configuration.
	out.Reset()
	if _, ok := runLocalStatus([]string{stale}, true, &out, &errOut); ok || out.Len() != 0 {
		t.Errorf("only a stale socket: answered %v, printed %q", ok, out.String())
	}

	// A request the socket does not know gets an error, not a report.
	conn, err := net.Dial("unix", paths[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("move\n"))
	var rep statusReport
	if err := json.NewDecoder(conn).Decode(&rep); err != nil || rep.Error == "" || rep.Key != "" {
		t.Errorf("unknown request: %+v, %v", rep, err)
	}
}
