package scenario

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"vipd/test/lab"
)

// capSet is a capability bitmask as /proc/<pid>/status prints it (CapEff,
// CapPrm, ...); the sets vipd promises (docs/operating.md, "Privileges")
// are written down here from the capability numbers, not taken from
// privs.go.
type capSet uint64

const (
	// daemonCaps is what the daemon keeps: addresses and raw frames.
	daemonCaps  capSet = 1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_NET_RAW
	capSysAdmin capSet = 1 << unix.CAP_SYS_ADMIN
)

// procStatus reads the capability lines and NoNewPrivs of every thread of
// a vipd process: the sets are per thread, so one forgotten thread is a
// thread that keeps root's powers.
type procStatus struct {
	uid                     string
	eff, prm, bnd, inh, amb capSet
	noNewPrivs              string
}

func readProcStatus(t *testing.T, path string) procStatus {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st procStatus
	for _, line := range strings.Split(string(data), "\n") {
		key, val, _ := strings.Cut(line, ":")
		val = strings.TrimSpace(val)
		hex := func() capSet {
			v, err := strconv.ParseUint(val, 16, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", path, line, err)
			}
			return capSet(v)
		}
		switch key {
		case "Uid":
			st.uid = strings.Fields(val)[0]
		case "CapEff":
			st.eff = hex()
		case "CapPrm":
			st.prm = hex()
		case "CapBnd":
			st.bnd = hex()
		case "CapInh":
			st.inh = hex()
		case "CapAmb":
			st.amb = hex()
		case "NoNewPrivs":
			st.noNewPrivs = val
		}
	}
	return st
}

// vipdThreads checks that pid is the vipd binary itself (not `ip netns
// exec` or setpriv before their exec) and returns the status of each of
// its threads.
func vipdThreads(t *testing.T, pid int, bin string) []procStatus {
	t.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	if exe != bin {
		t.Fatalf("pid %d runs %s, not %s", pid, exe, bin)
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) < 2 {
		t.Fatalf("threads of vipd (pid %d): %v %v", pid, tasks, err)
	}
	var all []procStatus
	for _, p := range tasks {
		all = append(all, readProcStatus(t, p))
	}
	return all
}

// assertCaps checks every thread and reports the first that differs; a
// zero bnd leaves the bounding set unchecked.
func assertCaps(t *testing.T, threads []procStatus, eff, prm, bnd capSet) {
	t.Helper()
	for i, st := range threads {
		if st.eff != eff || st.prm != prm || (bnd != 0 && st.bnd != bnd) || st.noNewPrivs != "1" {
			wantBnd := "any"
			if bnd != 0 {
				wantBnd = fmt.Sprintf("%016x", uint64(bnd))
			}
			t.Fatalf("thread %d of %d: CapEff %016x CapPrm %016x CapBnd %016x NoNewPrivs %s; want CapEff %016x CapPrm %016x CapBnd %s NoNewPrivs 1",
				i+1, len(threads), uint64(st.eff), uint64(st.prm), uint64(st.bnd), st.noNewPrivs, uint64(eff), uint64(prm), wantBnd)
		}
	}
}

func TestPrivilegesDropped(t *testing.T) {
	l := lab.New(t, 1)
	nd := l.Nodes[0]
	l.Start(nd)
	if h := l.Holder(lab.ElectBound, time.Second); h != nd {
		t.Fatalf("holder %s", h.Name)
	}
	bin, _ := lab.Binaries(t)
	threads := vipdThreads(t, nd.Cmd.Process.Pid, bin)
	assertCaps(t, threads, daemonCaps, daemonCaps, daemonCaps)
	if st := threads[0]; st.inh != 0 || st.amb != 0 {
		t.Errorf("CapInh %x CapAmb %x, want none (root starts with none)", uint64(st.inh), uint64(st.amb))
	}
	if log := nd.Log.String(); !strings.Contains(log, "privileges: kept effective net_admin,net_raw, permitted net_admin,net_raw, bounding net_admin,net_raw; no_new_privs set") {
		t.Errorf("no log line naming the capabilities kept:\n%s", log)
	}
}

func TestPrivilegesConfigPartition(t *testing.T) {
	lab.NeedRoot(t)
	label := uniqueLabel()
	img := lab.MakeImage(t, "ext4", label, map[string]string{"vipd.conf": strings.Join([]string{
		"vip.address=" + lab.VIP, "vip.interface=eth0", "vip.etcd=http://" + lab.EtcdIP + ":2379", "vip.ttl=2",
	}, "\n")})
	attachLoop(t, img)
	l := lab.New(t, 1)
	nd := l.Nodes[0]
	l.StartRaw(nd, "-cmdline", "none", "vip.config=LABEL="+label, "vip.name=n1", "vip.log=stderr")
	if h := l.Holder(lab.ElectBound, time.Second); h != nd {
		t.Fatalf("holder %s", h.Name)
	}
	bin, _ := lab.Binaries(t)
	// sys_admin stays where a SIGHUP re-exec can mount the partition again
	// from, but is not effective.
	assertCaps(t, vipdThreads(t, nd.Cmd.Process.Pid, bin), daemonCaps, daemonCaps|capSysAdmin, daemonCaps|capSysAdmin)
}

// TestPrivilegesNonRoot runs vipd as nobody with only the two capabilities,
// the way systemd's AmbientCapabilities= does.
func TestPrivilegesNonRoot(t *testing.T) {
	l := lab.New(t, 1)
	nd := l.Nodes[0]
	bin := reachableCopy(t)
	arp := lab.CaptureARP(t, l.Client)
	t0 := time.Now()
	l.Run(nd, []string{"setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
		"--inh-caps", "-all,+net_admin,+net_raw", "--ambient-caps", "+net_admin,+net_raw", "--",
		bin, "-cmdline", "none", "vip.address=" + lab.VIP, "vip.interface=eth0", "vip.etcd=" + l.EtcdURLs(),
		"vip.name=" + nd.Name, "vip.log=stderr"})
	if h := l.Holder(lab.ElectBound, time.Second); h != nd {
		t.Fatalf("holder %s", h.Name)
	}
	lab.WaitFor(t, 5*time.Second, "a gratuitous ARP from the non-root vipd", func() bool { return !arp.First(nd.MAC, t0).IsZero() })

	threads := vipdThreads(t, nd.Cmd.Process.Pid, bin)
	if uid := threads[0].uid; uid != "65534" {
		t.Fatalf("vipd runs as uid %s, want 65534", uid)
	}
	// Without CAP_SETPCAP the bounding set cannot be lowered;
	// no_new_privs keeps its members from being gained.
	assertCaps(t, threads, daemonCaps, daemonCaps, 0)
	if st := threads[0]; st.amb != daemonCaps {
		t.Errorf("CapAmb %x, want %x: a SIGHUP re-exec keeps the two capabilities only through the ambient set", uint64(st.amb), uint64(daemonCaps))
	}
	log := nd.Log.String()
	if !strings.Contains(log, "no CAP_SETPCAP to drop the others") || strings.Contains(log, "warning: could not lower") {
		t.Errorf("the kept bounding set is not logged as expected:\n%s", log)
	}

	// A SIGHUP re-exec as that user keeps the VIP and the two
	// capabilities (through the ambient set), with no /run/vipd to write.
	gains := l.Mon.Gains()
	l.Signal(nd, syscall.SIGHUP)
	lab.WaitLogCount(t, nd, "resumed the earlier run's lease", 1, 10*time.Second)
	lab.WaitLogCount(t, nd, "resumed; refreshed", 1, 5*time.Second)
	assertCaps(t, vipdThreads(t, nd.Cmd.Process.Pid, bin), daemonCaps, daemonCaps, 0)
	if g := l.Mon.Gains(); g != gains {
		t.Errorf("the VIP moved on SIGHUP:\n%s", l.Mon.History())
	}
}

// reachableCopy copies the test's vipd binary (in a 0700 directory) to
// one that another user can reach.
func reachableCopy(t *testing.T) string {
	t.Helper()
	src, _ := lab.Binaries(t)
	dir, err := os.MkdirTemp("", "vipd-test-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	bin := filepath.Join(dir, "vipd")
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}
