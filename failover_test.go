package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run real vipd processes in namespaces against a real etcd and
// assert the invariants: one holder, no overlap, the address gone where it
// must be gone, the client's neighbour entry moved. Bounds on waits are
// generous; the times themselves are measured by `make bench`.

const (
	labTTL      = 2 * time.Second
	electBound  = 15 * time.Second // first election after start
	moveBound   = 10 * time.Second // a handover after a fault
	settleAfter = 3 * time.Second  // several renewals: the holder keeps the address
)

func TestElectsOneHolder(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%dnodes", n), func(t *testing.T) {
			l := newLab(t, n, "vip.ttl=2")
			l.startAll()
			h := l.holder(electBound, settleAfter)
			if !l.hasVIP(h) {
				t.Fatalf("monitor says %s holds %s but its kernel does not list it", h.name, labVIP)
			}
			// The address carries a lifetime no longer than the TTL, so the
			// kernel removes it if vipd dies.
			r, err := dialRTNL(h.ns.fd(t))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			addrs, _ := r.addrs(0)
			for _, a := range addrs {
				if a.ip().String() == labVIP && (!a.HasLifetimes || a.Valid > 2 || a.Valid == foreverLifetime) {
					t.Fatalf("VIP on %s has valid_lft %d, want ≤ 2 s", h.name, a.Valid)
				}
			}
			l.assertNoOverlap()
		})
	}
}

func TestGracefulStopHandsOver(t *testing.T) {
	l := newLab(t, 3, "vip.ttl=2")
	l.startAll()
	old := l.holder(electBound, time.Second)
	l.touchVIP()
	l.waitClientNeighbour(old.mac, 5*time.Second)

	l.signal(old, syscall.SIGTERM)
	if err := l.wait(old, 5*time.Second); err != nil {
		t.Fatalf("vipd on %s exited with %v after SIGTERM, want status 0", old.name, err)
	}
	if l.hasVIP(old) {
		t.Fatalf("%s still has %s after vipd stopped", old.name, labVIP)
	}
	next := l.holderOtherThan(old, moveBound)
	l.waitClientNeighbour(next.mac, 5*time.Second)
	if !strings.Contains(old.log.String(), "stopping on terminated") {
		t.Errorf("stop not logged:\n%s", old.log.String())
	}
	l.assertNoOverlap()
}

func TestCrashedHolderIsReplaced(t *testing.T) {
	l := newLab(t, 3, "vip.ttl=2")
	l.startAll()
	old := l.holder(electBound, time.Second)
	l.touchVIP()
	l.waitClientNeighbour(old.mac, 5*time.Second)

	l.signal(old, syscall.SIGKILL)
	l.wait(old, 5*time.Second)
	// Nobody removes it: the kernel does, when its lifetime runs out.
	l.waitGone(old, 5*time.Second)
	next := l.holderOtherThan(old, moveBound)
	l.waitClientNeighbour(next.mac, 5*time.Second)
	l.assertNoOverlap()
}

func TestFrozenHolderNeverOverlaps(t *testing.T) {
	l := newLab(t, 3, "vip.ttl=2")
	l.startAll()
	old := l.holder(electBound, time.Second)

	l.signal(old, syscall.SIGSTOP)
	next := l.holderOtherThan(old, moveBound)
	if l.hasVIP(old) {
		t.Fatalf("frozen %s still has %s while %s holds it", old.name, labVIP, next.name)
	}
	time.Sleep(3 * labTTL)
	l.signal(old, syscall.SIGCONT)
	// The resumed node must find its deadline passed and step down, not
	// take the address back.
	time.Sleep(2 * labTTL)
	h := l.holder(moveBound, 0)
	if h == old {
		t.Fatalf("%s took the address back after SIGCONT", old.name)
	}
	if l.hasVIP(old) {
		t.Fatalf("%s has %s after SIGCONT while %s holds it", old.name, labVIP, h.name)
	}
	if !strings.Contains(old.log.String(), "leader -> candidate") {
		t.Errorf("the resumed node did not log stepping down:\n%s", old.log.String())
	}
	l.assertNoOverlap()
}

func TestReconcile(t *testing.T) {
	l := newLab(t, 2, "vip.ttl=2")
	first, second := l.nodes[0], l.nodes[1]
	// A copy left behind by an earlier run: removed before campaigning.
	first.ns.ip(t, "addr", "add", labVIP+"/32", "dev", "eth0", "valid_lft", "60", "preferred_lft", "60")
	l.start(first)
	waitFor(t, 5*time.Second, "the stale copy to be removed", func() bool {
		return strings.Contains(first.log.String(), "removed a stale copy")
	})
	h := l.holder(electBound, time.Second)
	if h != first {
		t.Fatalf("holder is %s, want %s (the only node running)", h.name, first.name)
	}
	l.start(second)

	// Removed by hand on the holder: put back.
	h.ns.ip(t, "addr", "del", labVIP+"/32", "dev", "eth0")
	waitFor(t, 5*time.Second, "the re-add to be logged", func() bool { return strings.Contains(h.log.String(), "re-added") })
	if !l.hasVIP(h) {
		t.Fatalf("%s logged the re-add but does not have %s", h.name, labVIP)
	}

	// Link down on the holder: it steps down and the other node takes over.
	h.ns.ip(t, "link", "set", "eth0", "down")
	l.waitGone(h, 5*time.Second)
	l.holderOtherThan(h, moveBound)
	h.ns.ip(t, "link", "set", "eth0", "up")
	time.Sleep(2 * labTTL)
	if got := l.holder(moveBound, 0); got != second {
		t.Fatalf("holder after link up is %s, want %s to keep it", got.name, second.name)
	}
	if !strings.Contains(h.log.String(), "candidate -> waiting") && !strings.Contains(h.log.String(), "leader -> waiting") {
		t.Errorf("link down not logged as a step-down:\n%s", h.log.String())
	}
	l.assertNoOverlap()
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

func TestBadConfigExits2(t *testing.T) {
	bin, _ := binaries(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"vip.address=300.1.1.1", "vip.etcd=http://192.0.2.1:2379"}, `vip.address="300.1.1.1": not an IP address`},
		{[]string{"vip.adress=192.0.2.100"}, `vip.adress="192.0.2.100": unknown key`},
		{[]string{"vip.address=192.0.2.100"}, `vip.etcd="": required`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=ftp://x", "vip.ttl=2"}, `vip.etcd="ftp://x"`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.ttl=soon"}, `vip.ttl="soon"`},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"-cmdline", "/nonexistent/cmdline", "vip.address=192.0.2.100"}, "-cmdline /nonexistent/cmdline"},
	}
	for _, tt := range tests {
		cmd := exec.Command(bin, append([]string{"-cmdline", "none"}, tt.args...)...)
		if tt.args[0] == "-cmdline" {
			cmd = exec.Command(bin, tt.args...)
		}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: exit %v, want status 2; output %q", tt.args, err, out)
			continue
		}
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("%v: output %q does not contain %q", tt.args, out, tt.want)
		}
		if tt.args[0] != "-bogus" && strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("%v: want one line, got %q", tt.args, out)
		}
	}
}

func TestCheckPrintsEffectiveConfig(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	cmdline := dir + "/cmdline"
	writeFile(t, cmdline, "root=/dev/vda1 vip.address=192.0.2.100 vip.etcd=http://192.0.2.1:2379 vip.ttl=5 quiet -- vip.ttl=9\n")
	out, err := exec.Command(bin, "-cmdline", cmdline, "-check", "vip.ttl=2", "vip.name=n1").CombinedOutput()
	if err != nil {
		t.Fatalf("-check: %v: %s", err, out)
	}
	for _, want := range []string{"vip.address=192.0.2.100/32", "vip.etcd=http://192.0.2.1:2379", "vip.ttl=2s", "vip.name=n1", "vip.interface=auto"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("-check output lacks %q:\n%s", want, out)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWaitsForInterface(t *testing.T) {
	l := newLab(t, 1, "vip.ttl=2")
	nd := l.nodes[0]
	l.start(nd, "vip.interface=eth1")
	waitFor(t, 5*time.Second, "the wait to be logged", func() bool {
		return strings.Contains(nd.log.String(), "waiting for interface eth1 to appear")
	})
	time.Sleep(labTTL)
	select {
	case err := <-nd.exit:
		t.Fatalf("vipd exited (%v) while the interface was missing", err)
	default:
	}
	// The interface appears (as a late driver or a renamed NIC would).
	l.join(nd.ns, "eth1", "vn1b", "02:00:5e:00:53:11", "192.0.2.21")
	waitFor(t, electBound, "the VIP on eth1", func() bool {
		return strings.Contains(nd.ns.ip(t, "-4", "addr", "show", "dev", "eth1"), " "+labVIP+"/32")
	})
}

func TestEtcdOutageDropsAddress(t *testing.T) {
	l := newLab(t, 2, "vip.ttl=2")
	l.startAll()
	h := l.holder(electBound, time.Second)

	// With etcd gone no node can renew: the holder must give the address up
	// by its own deadline, and nobody may take it.
	l.stopEtcd()
	l.waitGone(h, 5*time.Second)
	time.Sleep(2 * labTTL)
	if held, _ := l.mon.current(); len(held) != 0 {
		t.Fatalf("%v hold %s while etcd is down", l.names(held), labVIP)
	}
	for _, nd := range l.nodes {
		select {
		case err := <-nd.exit:
			t.Fatalf("vipd on %s exited (%v) while etcd was down", nd.name, err)
		default:
		}
	}
	if !strings.Contains(h.log.String(), "etcd unreachable") {
		t.Errorf("the outage was not logged:\n%s", h.log.String())
	}
	if n := strings.Count(h.log.String(), "etcd unreachable"); n > 3 {
		t.Errorf("the outage was logged %d times; once per change is enough:\n%s", n, h.log.String())
	}

	l.startEtcd()
	l.holder(3*electBound, time.Second)
	l.assertNoOverlap()
}

func TestCannotAddAddressDoesNotSpin(t *testing.T) {
	l := newLab(t, 1, "vip.ttl=2")
	nd := l.nodes[0]
	// Without CAP_NET_ADMIN the kernel refuses the address: a local fault
	// that no amount of re-election fixes.
	l.startWrapped(nd, []string{"setpriv", "--bounding-set", "-net_admin", "--"})
	waitFor(t, electBound, "the failure to be logged", func() bool {
		return strings.Contains(nd.log.String(), "cannot add the address")
	})
	time.Sleep(3 * time.Second)
	if n := strings.Count(nd.log.String(), "cannot add the address"); n > 1 {
		t.Fatalf("%d failed takeovers in 3 s; a local fault must not spin through elections:\n%s", n, nd.log.String())
	}
	if l.hasVIP(nd) {
		t.Fatal("the address is there although adding it failed")
	}
	select {
	case err := <-nd.exit:
		t.Fatalf("vipd exited (%v); runtime trouble must be waited out", err)
	default:
	}
}
