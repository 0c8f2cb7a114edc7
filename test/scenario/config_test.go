package scenario

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"vipd/test/lab"
)

// labelSeq numbers the test's filesystem labels.
var labelSeq atomic.Int32

func TestConfigPartitionWithTLS(t *testing.T) {
	lab.NeedRoot(t)
	pki := lab.NewPKI(t)
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	label := uniqueLabel()
	conf := strings.Join([]string{
		"# made by TestConfigPartitionWithTLS",
		"vip.address=" + lab.VIP,
		"vip.interface=eth0",
		"vip.etcd=https://" + lab.EtcdIP + ":2379",
		"vip.etcd.ca=pki/ca.pem",
		"vip.etcd.cert=pki/client.pem",
		"vip.etcd.key=pki/client-key.pem",
		"vip.ttl=2",
	}, "\n")
	img := lab.MakeImage(t, "ext4", label, map[string]string{
		"vipd.conf":          conf,
		"pki/ca.pem":         read(pki.CACert),
		"pki/client.pem":     read(pki.ClientCert),
		"pki/client-key.pem": read(pki.ClientKey),
	})
	attachLoop(t, img)

	l := lab.NewWith(t, lab.Options{Nodes: 1, EtcdTLS: pki})
	nd := l.Nodes[0]
	l.StartRaw(nd, "-cmdline", "none", "vip.config=LABEL="+label, "vip.name=n1", "vip.log=stderr")
	if h := l.Holder(lab.ElectBound, time.Second); h != nd {
		t.Fatalf("holder %s", h.Name)
	}
	if log := nd.Log.String(); !strings.Contains(log, "read 7 settings from LABEL="+label) {
		t.Errorf("reading the partition was not logged:\n%s", log)
	}
	if m := mountsOf(t, nd.Cmd.Process.Pid); strings.Contains(m, "vipd-config-") {
		t.Fatalf("the config partition is still mounted:\n%s", m)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "vipd-config-*")); len(left) > 0 {
		t.Fatalf("mount directories left behind: %v", left)
	}
}

func TestConfigWrongCAWaits(t *testing.T) {
	lab.NeedRoot(t)
	pki := lab.NewPKI(t)
	l := lab.NewWith(t, lab.Options{Nodes: 1, EtcdTLS: pki})
	nd := l.Nodes[0]
	l.StartRaw(nd, "-cmdline", "none", "vip.address="+lab.VIP, "vip.interface=eth0", "vip.name=n1", "vip.log=stderr",
		"vip.etcd=https://"+lab.EtcdIP+":2379", "vip.etcd.ca="+pki.OtherCA, "vip.etcd.cert="+pki.ClientCert, "vip.etcd.key="+pki.ClientKey)
	lab.WaitFor(t, 15*time.Second, "the TLS failure to be logged", func() bool {
		return strings.Contains(nd.Log.String(), "etcd unreachable")
	})
	time.Sleep(3 * time.Second)
	select {
	case err := <-nd.Exit:
		t.Fatalf("vipd exited (%v); a wrong CA is waited out and logged, not a crash loop", err)
	default:
	}
	log := nd.Log.String()
	if !strings.Contains(log, "certificate") {
		t.Errorf("the log does not say the certificate is the trouble:\n%s", log)
	}
	if n := strings.Count(log, "etcd unreachable"); n > 2 {
		t.Errorf("logged %d times in a few seconds:\n%s", n, log)
	}
	if l.HasVIP(nd) {
		t.Fatal("holds the VIP without etcd")
	}
}

func TestConfigDeviceAppearsLate(t *testing.T) {
	lab.NeedRoot(t)
	l := lab.New(t, 1)
	nd := l.Nodes[0]
	label := uniqueLabel()
	img := lab.MakeImage(t, "ext4", label, map[string]string{"vipd.conf": strings.Join([]string{
		"vip.address=" + lab.VIP, "vip.interface=eth0", "vip.etcd=" + l.EtcdURLs(), "vip.ttl=2"}, "\n")})
	l.StartRaw(nd, "-cmdline", "none", "vip.config=LABEL="+label, "vip.config.timeout=20", "vip.name=n1", "vip.log=stderr")
	lab.WaitFor(t, 5*time.Second, "the wait to be logged", func() bool {
		return strings.Contains(nd.Log.String(), "waiting up to 20s for config source LABEL="+label)
	})
	attachLoop(t, img) // the disk shows up after vipd started, as at boot
	if h := l.Holder(lab.ElectBound, time.Second); h != nd {
		t.Fatalf("holder %s", h.Name)
	}
	if !strings.Contains(nd.Log.String(), "appeared as /dev/loop") {
		t.Errorf("the late device was not logged:\n%s", nd.Log.String())
	}
}

func TestConfigDeviceNeverAppears(t *testing.T) {
	bin, _ := lab.Binaries(t)
	cmd := exec.Command(bin, "-cmdline", "none", "vip.config=LABEL="+uniqueLabel(), "vip.config.timeout=1", "vip.log=stderr")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1 (runtime trouble, not bad input)\n%s", err, out)
	}
	if !strings.Contains(string(out), "no such device after waiting 1s (vip.config.timeout)") {
		t.Fatalf("output: %s", out)
	}
}

// attachLoop attaches img to a free loop device and detaches it at the end.
func attachLoop(t testing.TB, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", img).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	return dev
}

// uniqueLabel is an ext4 label (at most 16 bytes) no other test run uses.
func uniqueLabel() string {
	return fmt.Sprintf("vt%d-%d", os.Getpid()%100000, labelSeq.Add(1))
}

// mountsOf is the mount table seen by a process (vipd runs in the mount
// namespace that `ip netns exec` makes).
func mountsOf(t testing.TB, pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mounts", pid))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
