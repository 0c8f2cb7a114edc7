package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"vipd/test/lab"
)

// loopbackEtcd starts the pinned etcd (test/etcd/bin/etcd, or $VIPD_ETCD)
// on 127.0.0.1 with ports the kernel picks, for the election's tests: they
// need a real etcd, not root or a network namespace. A missing binary
// fails the test: `make etcd` builds it, and a skip would hide the
// election from a run that meant to cover it.
func loopbackEtcd(t testing.TB) *clientv3.Client {
	t.Helper()
	bin := os.Getenv("VIPD_ETCD")
	if bin == "" {
		bin, _ = filepath.Abs("test/etcd/bin/etcd")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the pinned etcd is missing (%v): run `make etcd`, or set VIPD_ETCD", err)
	}
	client, peer := freePort(t), freePort(t)
	dir := t.TempDir()
	log := &lab.SyncBuffer{}
	cmd := exec.Command(bin, "--name", "loop", "--data-dir", dir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "loop="+peer, "--log-level", "error")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("--- etcd log:\n%s", log.String())
		}
	})
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	lab.WaitFor(t, 30*time.Second, "etcd on "+client+" to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "health")
		return err == nil
	})
	return cli
}

// freePort is a loopback URL on a port that was free a moment ago; etcd
// binds it right after, so a clash is possible but fails loudly.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprintf("http://%s", l.Addr())
}
