package scenario

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// These tests run real vipd processes in namespaces against a real etcd and
// assert the invariants: one holder, no overlap, the address gone where it
// must be gone, the client's neighbour entry moved. Bounds on waits are
// generous; the times themselves are measured by `make bench`.

func TestElectsOneHolder(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%dnodes", n), func(t *testing.T) {
			l := lab.New(t, n, "vip.ttl=2")
			l.StartAll()
			h := l.Holder(lab.ElectBound, lab.SettleAfter)
			if !l.HasVIP(h) {
				t.Fatalf("monitor says %s holds %s but its kernel does not list it", h.Name, lab.VIP)
			}
			// The address carries a lifetime no longer than the TTL, so the
			// kernel removes it if vipd dies.
			if a, _ := l.VIPAddr(h); !a.HasLifetimes || a.Valid > 2 {
				t.Fatalf("VIP on %s has valid_lft %d, want ≤ 2 s", h.Name, a.Valid)
			}
			l.AssertNoOverlap()
		})
	}
}

func TestRemovesStaleCopy(t *testing.T) {
	l := lab.New(t, 1, "vip.ttl=2")
	nd := l.Nodes[0]
	// A copy left behind by an earlier run: removed before campaigning.
	nd.NS.IP(t, "addr", "add", lab.VIP+"/32", "dev", "eth0", "valid_lft", "60", "preferred_lft", "60")
	l.Start(nd)
	lab.WaitFor(t, 5*time.Second, "the stale copy to be removed", func() bool {
		return strings.Contains(nd.Log.String(), "removed a stale copy")
	})
	if h := l.Holder(lab.ElectBound, time.Second); h != nd {
		t.Fatalf("holder is %s, want %s (the only node running)", h.Name, nd.Name)
	}
	// The copy it holds now is its own, with a lifetime of at most the TTL.
	if a, _ := l.VIPAddr(nd); a.Valid > 2 {
		t.Fatalf("the VIP kept the stale copy's lifetime (%d s)", a.Valid)
	}
}

// TestFailureReachesStderr: a failure that is not bad input (a config
// device that never appears) exits 1 with a line on stderr naming it, even
// when stderr is a pipe and vip.log would send the daemon's lines to
// /dev/kmsg.
func TestFailureReachesStderr(t *testing.T) {
	bin, _ := lab.Binaries(t)
	cmd := exec.Command(bin, "-cmdline", "none", "-check", "vip.config=LABEL=VIPD-NO-SUCH-LABEL", "vip.config.timeout=1s")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1; stderr: %q", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "LABEL=VIPD-NO-SUCH-LABEL: no such device") {
		t.Fatalf("stderr %q does not name the missing label", stderr.String())
	}
}

// TestHelpListsSettings: -h exits 0 and lists every vip.* key with its
// default and a meaning. The keys and defaults are the lab's own list
// (lab.Settings): -h must list exactly those, in that order.
func TestHelpListsSettings(t *testing.T) {
	bin, _ := lab.Binaries(t)
	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("-h: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	for _, s := range lab.Settings {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), s.Key+" ") })
		if i < 0 {
			t.Errorf("-h does not list %s:\n%s", s.Key, out)
			continue
		}
		f := strings.Fields(lines[i])
		rest := strings.Join(f[1:], " ")
		if !strings.HasPrefix(rest, s.Default+" ") || len(strings.TrimPrefix(rest, s.Default+" ")) == 0 {
			t.Errorf("-h line for %s is %q, want its default %q and a meaning", s.Key, lines[i], s.Default)
		}
	}
	var listed, want []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "vip.") && strings.HasPrefix(l, "  ") {
			listed = append(listed, f[0])
		}
	}
	for _, s := range lab.Settings {
		want = append(want, s.Key)
	}
	if !slices.Equal(listed, want) {
		t.Errorf("-h lists the keys %v, want %v (lab.Settings)", listed, want)
	}
}

func TestBadConfigExits2(t *testing.T) {
	bin, _ := lab.Binaries(t)
	tests := []struct {
		Args []string
		want string
	}{
		{[]string{"vip.address=300.1.1.1", "vip.etcd=http://192.0.2.1:2379"}, `vip.address="300.1.1.1": not an IP address`},
		{[]string{"vip.adress=192.0.2.100"}, `vip.adress="192.0.2.100": unknown key`},
		{[]string{"vip.address=192.0.2.100"}, `vip.etcd="": required`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=ftp://x", "vip.ttl=2"}, `vip.etcd="ftp://x"`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.ttl=soon"}, `vip.ttl="soon"`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.check=https://192.0.2.5:6443/readyz"},
			`vip.check="https://192.0.2.5:6443/readyz": an https check of a host other than loopback (127.0.0.0/8, ::1, localhost) needs vip.check.ca`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.check.ca=/etc/ca.pem"},
			`vip.check.ca="/etc/ca.pem": needs an https:// vip.check`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.check=ftp://127.0.0.1:21"}, `vip.check="ftp://127.0.0.1:21"`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.check.timeout=0"}, `vip.check.timeout="0"`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.check.rise=0"}, `vip.check.rise="0"`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.check.fall=x"}, `vip.check.fall="x"`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.priority=1.5"}, `vip.priority="1.5"`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.preempt.delay=-1s"}, `vip.preempt.delay="-1s"`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.check.interval=200ms"},
			`vip.check.interval="200ms": must be at least vip.check.timeout (1s)`},
		{[]string{"vip.address=192.0.2.100", "vip.etcd=http://192.0.2.1:2379", "vip.check=https://192.0.2.5:6443", "vip.check.ca=/nonexistent/ca.pem"},
			`vip.check.ca="/nonexistent/ca.pem": stat /nonexistent/ca.pem: no such file or directory`},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"-cmdline", "/nonexistent/cmdline", "vip.address=192.0.2.100"}, "-cmdline /nonexistent/cmdline"},
	}
	for _, tt := range tests {
		cmd := exec.Command(bin, append([]string{"-cmdline", "none"}, tt.Args...)...)
		if tt.Args[0] == "-cmdline" {
			cmd = exec.Command(bin, tt.Args...)
		}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: exit %v, want status 2; output %q", tt.Args, err, out)
			continue
		}
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("%v: output %q does not contain %q", tt.Args, out, tt.want)
		}
		if tt.Args[0] != "-bogus" && strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("%v: want one line, got %q", tt.Args, out)
		}
	}
}

func TestCheckPrintsEffectiveConfig(t *testing.T) {
	bin, _ := lab.Binaries(t)
	dir := t.TempDir()
	cmdline := dir + "/cmdline"
	lab.WriteFile(t, cmdline, "root=/dev/vda1 vip.address=192.0.2.100 vip.etcd=http://192.0.2.1:2379 vip.ttl=5 quiet -- vip.ttl=9\n")
	out, err := exec.Command(bin, "-cmdline", cmdline, "-check", "vip.ttl=2", "vip.name=n1", "vip.priority=-3", "vip.check=tcp://127.0.0.1:6443").CombinedOutput()
	if err != nil {
		t.Fatalf("-check: %v: %s", err, out)
	}
	for _, want := range []string{"vip.address=192.0.2.100/32 # kernel command line", "vip.etcd=http://192.0.2.1:2379 # kernel command line",
		"vip.ttl=2s # argument", "vip.name=n1 # argument", "vip.interface=auto # default",
		"vip.check=tcp://127.0.0.1:6443 # argument", "vip.check.ca= # default", "vip.check.interval=1s # default", "vip.check.timeout=1s # default",
		"vip.check.rise=2 # default", "vip.check.fall=3 # default", "vip.priority=-3 # argument", "vip.preempt.delay=5s # default"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("-check output lacks %q:\n%s", want, out)
		}
	}
}

func TestWaitsForInterface(t *testing.T) {
	l := lab.New(t, 1, "vip.ttl=2")
	nd := l.Nodes[0]
	l.Start(nd, "vip.interface=eth1")
	lab.WaitFor(t, 5*time.Second, "the wait to be logged", func() bool {
		return strings.Contains(nd.Log.String(), "waiting for interface eth1 to appear")
	})
	time.Sleep(lab.TTL)
	select {
	case err := <-nd.Exit:
		t.Fatalf("vipd exited (%v) while the interface was missing", err)
	default:
	}
	// The interface appears (as a late driver or a renamed NIC would).
	l.Join(nd.NS, "eth1", "vn1b", "02:00:5e:00:53:11", "192.0.2.21")
	lab.WaitFor(t, lab.ElectBound, "the VIP on eth1", func() bool {
		return strings.Contains(nd.NS.IP(t, "-4", "addr", "show", "dev", "eth1"), " "+lab.VIP+"/32")
	})
}

func TestCannotAddAddressDoesNotSpin(t *testing.T) {
	l := lab.New(t, 1, "vip.ttl=2")
	nd := l.Nodes[0]
	// Without CAP_NET_ADMIN the kernel refuses the address: a local fault
	// that no amount of re-election fixes.
	l.StartWrapped(nd, []string{"setpriv", "--bounding-set", "-net_admin", "--"})
	lab.WaitFor(t, lab.ElectBound, "the failure to be logged", func() bool {
		return strings.Contains(nd.Log.String(), "cannot add the address")
	})
	time.Sleep(3 * time.Second)
	if n := strings.Count(nd.Log.String(), "ranking this node unable"); n > 1 {
		t.Fatalf("%d failed takeovers in 3 s; a local fault must not spin through elections:\n%s", n, nd.Log.String())
	}
	if l.HasVIP(nd) {
		t.Fatal("the address is there although adding it failed")
	}
	select {
	case err := <-nd.Exit:
		t.Fatalf("vipd exited (%v); runtime trouble must be waited out", err)
	default:
	}
}

func TestDualStackFailover(t *testing.T) {
	l := lab.NewWith(t, lab.Options{Nodes: 2, DualStack: true, Args: []string{"vip.ttl=2"}})
	l.StartResponders()
	p6 := l.StartProberTo(lab.VIP6)
	na := lab.CaptureNA(t, l.Client)
	l.StartAll()
	old := l.Holder(lab.ElectBound, time.Second)
	lab.WaitFor(t, 5*time.Second, "the IPv6 VIP on "+old.Name, func() bool {
		held, _ := l.Mon6.Current()
		return len(held) == 1 && l.Nodes[held[0]] == old
	})
	p6.WaitAnsweredBy(t, old.Name, time.Now(), 5*time.Second) // the client resolved the IPv6 VIP
	if got := l.ClientNeighbourOf(lab.VIP6); got != old.MAC {
		t.Fatalf("client's IPv6 neighbour entry is %q, want %s", got, old.MAC)
	}

	t0 := time.Now()
	l.Signal(old, syscall.SIGKILL)
	next := l.HolderOtherThan(old, lab.MoveBound)
	lab.WaitFor(t, 5*time.Second, "the IPv6 VIP to move with the IPv4 one", func() bool {
		held, _ := l.Mon6.Current()
		return len(held) == 1 && l.Nodes[held[0]] == next
	})
	// Once the advertisement has reached the client, its entry must already
	// name the new holder: no waiting for neighbour unreachability
	// detection, which takes five seconds and more.
	lab.WaitFor(t, 5*time.Second, "the new holder's neighbour advertisement", func() bool { return !na.First(next.MAC, t0).IsZero() })
	lab.WaitFor(t, 200*time.Millisecond, "the client's IPv6 entry to follow the advertisement", func() bool {
		return l.ClientNeighbourOf(lab.VIP6) == next.MAC
	})
	p6.WaitAnsweredBy(t, next.Name, t0, time.Second)
	if o := l.Mon6.Overlaps(); len(o) > 0 {
		t.Fatalf("two holders of %s: %v", lab.VIP6, o)
	}
	l.AssertNoOverlap()
}

// TestEtcdLateStart: nodes that start before their etcd exists (a cluster
// not yet bootstrapped) wait with one log line each, and one of them holds
// the VIP promptly once etcd answers. gRPC's own reconnect backoff grows
// to two minutes; vipd caps it (main.go etcdReconnect), so after 20 s of
// refused connections the next attempt is at most a second away, not
// another 10 s or more.
func TestEtcdLateStart(t *testing.T) {
	l := lab.New(t, 2, "vip.ttl=2")
	l.StopMember(l.Etcd[0])
	l.StartAll()
	time.Sleep(20 * time.Second)
	l.StartEtcd(l.Etcd[0])
	ready := time.Now()
	h := l.Holder(lab.TTL+lab.MoveBound, 0)
	took := l.Mon.GainedAt(lab.IndexOf(l.Nodes, h)).Sub(ready)
	t.Logf("etcd healthy → %s holds the VIP: %v", h.Name, took.Round(time.Millisecond))
	if took > lab.TTL+2*time.Second {
		t.Errorf("%s took the VIP %v after etcd was ready; want within TTL + 2 s", h.Name, took)
	}
	for _, nd := range l.Nodes {
		if n := strings.Count(nd.Log.String(), "etcd unreachable"); n != 1 {
			t.Errorf("%s logged %d lines about the unreachable etcd, want 1", nd.Name, n)
		}
	}
}
