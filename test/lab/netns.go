package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Every namespace a test creates is named vipdt<pid>-<n>-<what>, so a later run
// can tell its own namespaces from those a crashed run left behind, and nothing
// here can collide with a namespace that is not ours.
var nsSeq atomic.Int32

func nsPrefix() string { return fmt.Sprintf("vipdt%d-", os.Getpid()) }

// NeedRoot skips a lab test when not run as root, in one line; as root it
// fails the test when a tool every lab needs is missing.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces: sudo make test")
	}
	for _, tool := range []string{"ip", "sh", "mount"} {
		NeedTool(t, tool)
	}
}

// NeedTool fails the test when a command it runs is not installed.
func NeedTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed (test/install-deps installs what the tests need)", name)
	}
}

// Main is a lab package's TestMain: as root, it first deletes the
// namespaces that earlier runs, killed before their cleanups, left behind.
func Main(m *testing.M) int {
	if os.Geteuid() == 0 {
		sweepStaleNamespaces()
	}
	return m.Run()
}

// sweepStaleNamespaces deletes namespaces left by earlier test runs whose
// process no longer exists.
func sweepStaleNamespaces() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "vipdt")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			exec.Command("ip", "netns", "delete", e.Name()).Run()
		}
	}
}

// NS is a network namespace owned by one test.
type NS struct {
	Name string
}

// NewNS creates a namespace with loopback up and removes it when the test ends,
// after the test's own cleanups (which stop the processes inside it) have run.
func NewNS(t testing.TB, what string) *NS {
	t.Helper()
	NeedRoot(t)
	ns := &NS{Name: fmt.Sprintf("%s%d-%s", nsPrefix(), nsSeq.Add(1), what)}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// IP runs `ip -n <ns> args...` and fails the test on error.
func (ns *NS) IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Sysctl sets a sysctl inside the namespace.
func (ns *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	err := ns.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) })
	if err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v", key, value, ns.Name, err)
	}
}

// Command prepares a process that runs inside the namespace, in a process
// group of its own (so that a signal reaches a daemon's children too), and
// is killed if the test binary dies first.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return cmd
}

// Do runs fn on an OS thread that has entered the namespace. Sockets opened in
// fn stay in the namespace after do returns. If the thread cannot be brought
// back, it stays locked so the runtime discards it with the goroutine.
func (ns *NS) Do(fn func() error) error {
	target, err := os.Open(filepath.Join("/run/netns", ns.Name))
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- ferr
			return // thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Fd opens the namespace file, for netlink.Config.NetNS.
func (ns *NS) Fd(t testing.TB) int {
	t.Helper()
	f, err := os.Open(filepath.Join("/run/netns", ns.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// Veth joins two namespaces with a veth pair: aName in a, bName in b, both up.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	a.IP(t, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.IP(t, "link", "set", aName, "up")
	b.IP(t, "link", "set", bName, "up")
}
