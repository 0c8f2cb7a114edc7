package boot

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The boot lab: a network namespace of the test's own with a bridge, one
// tap per VM, the pinned etcd on the bridge's address, and the client's
// view (ping, arping, the neighbour table) from the same namespace. The
// VMs are qemu-system-x86_64 or qemu-system-aarch64 (-M virt) under
// software emulation (TCG), each booting Debian's cloud kernel for its
// architecture with the test's initramfs for it. Nothing outside the
// namespace is touched; the namespace, the VMs and etcd go when the test
// ends, failed or not.

const (
	bootVIP     = "192.0.2.100"
	bootEtcdIP  = "192.0.2.1"
	bootBridge  = "02:00:5e:00:53:fe" // fixed: a bridge takes its ports' MACs otherwise (docs/design.md, section 2)
	bootTTL     = 3 * time.Second
	bootMem     = "256"
	bootTimeout = 90 * time.Second // a boot under TCG on a loaded 2-core machine, with margin
)

type bootLab struct {
	t     *testing.T
	ns    string
	dir   string
	amd64 *guest
	arm64 *guest
	etcd  *exec.Cmd
	vms   []*vm
}

// guest is what the VMs of one architecture boot: Debian's cloud kernel,
// its modules and busybox-static (installed on the host for amd64;
// unpacked from the arm64 packages by test/install-deps), vipd built for
// that architecture, and the qemu that emulates it.
type guest struct {
	arch    string
	qemu    []string // the emulator and its machine
	console string   // the serial console's device in the guest
	ctlTTY  string   // the control line's
	root    string   // where boot/, lib/modules/ and bin/busybox are
	kernel  string
	kver    string
	busybox string
	vipd    string
	modules []string
	initrd  string
}

// newGuest finds the kernel under root and builds the initramfs.
func (l *bootLab) newGuest(g *guest) *guest {
	t := l.t
	needTool(t, g.qemu[0], map[string]string{"amd64": "qemu-system-x86", "arm64": "qemu-system-arm"}[g.arch])
	if g.vipd == "" {
		t.Fatalf("no vipd for %s: run `sudo make boot-test`", g.arch)
	}
	kernels, _ := filepath.Glob(filepath.Join(g.root, "boot", "vmlinuz-*-cloud-"+g.arch))
	if len(kernels) == 0 {
		t.Fatalf("no %s/boot/vmlinuz-*-cloud-%s: run test/install-deps boot-test (as root)", g.root, g.arch)
	}
	sort.Strings(kernels)
	g.kernel = kernels[len(kernels)-1]
	g.kver = strings.TrimPrefix(filepath.Base(g.kernel), "vmlinuz-")
	g.initrd = filepath.Join(l.dir, "initramfs-"+g.arch+".cpio")
	buildInitramfs(t, g, g.initrd)
	return g
}

type vm struct {
	n       int
	g       *guest
	name    string // hostname, or "" (vipd then names itself by MAC)
	mac     string
	ip      string
	cmd     *exec.Cmd
	console string // the serial console (ttyS0, ttyAMA0), as a file
	ctl     string // ttyS1, hvc0: the control line (/etc/ctl in the guest)
	mon     string // qemu's human monitor (stop, cont)
	exited  chan struct{}
	started time.Time
	up      time.Duration   // from qemu's start to waitConsole's line
	qemuOut strings.Builder // qemu's own messages
}

func needTool(t *testing.T, name, pkg string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install Debian's %s (make boot-test needs it)", name, pkg)
	}
	return p
}

// newBootLab builds the initramfs and the namespace.
func newBootLab(t *testing.T) *bootLab {
	if os.Geteuid() != 0 {
		t.Fatal("the boot test needs root: network namespaces, taps, qemu (sudo make boot-test)")
	}
	needTool(t, "mkfs.ext4", "e2fsprogs")
	if os.Getenv("VIPD_ETCD") == "" || os.Getenv("VIPD_ARM64_ROOT") == "" {
		t.Fatal("VIPD and VIPD_ARM64 (the vipd binaries), VIPD_ARM64_ROOT (the unpacked arm64 packages) and VIPD_ETCD (the pinned etcd) must be set: run `sudo make boot-test`")
	}
	l := &bootLab{t: t, ns: fmt.Sprintf("vipdboot%d", os.Getpid()), dir: t.TempDir()}
	l.amd64 = l.newGuest(&guest{arch: "amd64", qemu: []string{"qemu-system-x86_64"}, console: "ttyS0", ctlTTY: "ttyS1",
		root: "/", busybox: busyboxPath(t), vipd: os.Getenv("VIPD"), modules: bootModules})
	root := os.Getenv("VIPD_ARM64_ROOT")
	l.arm64 = l.newGuest(&guest{arch: "arm64", qemu: []string{"qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57"},
		console: "ttyAMA0", ctlTTY: "hvc0", root: root, busybox: filepath.Join(root, "bin", "busybox"),
		vipd: os.Getenv("VIPD_ARM64"), modules: append(append([]string(nil), bootModules...), "virtio_console")})

	l.ipCmd("netns", "add", l.ns)
	t.Cleanup(l.close)
	l.ip("link", "add", "br0", "address", bootBridge, "type", "bridge")
	l.ip("addr", "add", bootEtcdIP+"/24", "dev", "br0")
	l.ip("link", "set", "br0", "up")
	l.ip("link", "set", "lo", "up")
	return l
}

// ctlScript runs on the guest's second serial port: the test's control
// path. "stop" sends vipd SIGTERM (vipd-respawn starts it again, as a
// candidate; killall, like pidof, does not match vipd-respawn); "clock"
// steps the wall clock an hour forward.
const ctlScript = `#!/bin/sh
while read -r cmd; do
	case "$cmd" in
	stop) killall -TERM vipd && echo "ctl: SIGTERM sent to vipd" >/dev/kmsg ;;
	clock) date -s "@$(( $(date +%s) + 3600 ))" >/dev/null && echo "ctl: wall clock stepped to $(date)" >/dev/kmsg ;;
	esac
done
`

func (l *bootLab) close() {
	for _, v := range l.vms {
		v.kill()
	}
	if l.etcd != nil {
		l.etcd.Process.Kill()
		l.etcd.Wait()
	}
	exec.Command("ip", "netns", "del", l.ns).Run()
	if l.t.Failed() {
		for _, v := range l.vms {
			l.t.Logf("--- console of vm%d:\n%s", v.n, v.consoleText())
		}
	}
}

func (l *bootLab) ipCmd(args ...string) string {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *bootLab) ip(args ...string) string { return l.ipCmd(append([]string{"-n", l.ns}, args...)...) }

// in runs a command inside the namespace.
func (l *bootLab) in(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// startEtcd runs the pinned etcd, one member, on the bridge's address, and
// returns when it answers.
func (l *bootLab) startEtcd() time.Time {
	url := "http://" + bootEtcdIP + ":2379"
	l.etcd = l.in(os.Getenv("VIPD_ETCD"), "--name", "boot", "--data-dir", filepath.Join(l.dir, "etcd"),
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "boot=http://127.0.0.1:2380", "--log-level", "error")
	if err := l.etcd.Start(); err != nil {
		l.t.Fatalf("start etcd: %v", err)
	}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if l.etcdHealthy() {
			return time.Now()
		}
	}
	l.t.Fatal("etcd not healthy within 30 s")
	return time.Time{}
}

// etcdHealthy asks etcd's /health from inside the namespace.
func (l *bootLab) etcdHealthy() bool {
	c, err := l.dial(bootEtcdIP + ":2379")
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "GET /health HTTP/1.0\r\nHost: %s\r\n\r\n", bootEtcdIP)
	b, _ := io.ReadAll(io.LimitReader(c, 4096))
	return strings.Contains(string(b), `"health":"true"`)
}

// dial opens a TCP connection from inside the namespace.
func (l *bootLab) dial(addr string) (net.Conn, error) {
	var c net.Conn
	err := l.inNS(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, time.Second)
		return err
	})
	return c, err
}

// inNS runs fn on a thread that has entered the namespace, which leaves it
// again afterwards (a socket stays in the namespace it was made in).
func (l *bootLab) inNS(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked if the thread cannot return: it dies with the goroutine
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			done <- err
			return
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + l.ns)
		if err != nil {
			done <- err
			return
		}
		defer target.Close()
		if err := setns(target); err != nil {
			done <- err
			return
		}
		err = fn()
		if setns(self) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// sysSetns is setns(2) on x86-64, the only host this test runs on (the
// syscall package has no name for it; x/sys would be this module's first
// dependency).
const sysSetns = 308

func setns(f *os.File) error {
	if _, _, errno := syscall.RawSyscall(sysSetns, f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
		return fmt.Errorf("setns %s: %w", f.Name(), errno)
	}
	return nil
}

// boot starts VM n of guest g with the given kernel command line words
// (after the console ones) and, if cfgDisk is set, that image as a second
// virtio disk.
func (l *bootLab) boot(g *guest, n int, hostname string, words, cfgDisk string) *vm {
	v := &vm{n: n, g: g, name: hostname, mac: fmt.Sprintf("52:54:00:00:53:%02x", n), ip: fmt.Sprintf("192.0.2.%d", 10+n),
		console: filepath.Join(l.dir, fmt.Sprintf("console-%d.log", n)), ctl: filepath.Join(l.dir, fmt.Sprintf("ctl-%d.sock", n)),
		mon:    filepath.Join(l.dir, fmt.Sprintf("mon-%d.sock", n)),
		exited: make(chan struct{})}
	tap := fmt.Sprintf("tap%d", n)
	l.ip("tuntap", "add", "dev", tap, "mode", "tap")
	l.ip("link", "set", tap, "master", "br0", "up")
	cmdline := "console=" + g.console + " panic=-1 boot.ip=" + v.ip + "/24"
	if hostname != "" {
		cmdline += " boot.hostname=" + hostname
	}
	cmdline += " " + words
	args := append(append([]string(nil), g.qemu[1:]...), "-accel", "tcg", "-m", bootMem, "-smp", "1", "-nodefaults", "-no-reboot", "-display", "none",
		"-kernel", g.kernel, "-initrd", g.initrd, "-append", cmdline,
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+v.mac,
		"-serial", "file:"+v.console,
		"-monitor", "unix:"+v.mon+",server=on,wait=off")
	if g.ctlTTY == "hvc0" {
		// -M virt has one UART: the control line is a virtio console.
		args = append(args, "-chardev", "socket,id=ctl,path="+v.ctl+",server=on,wait=off",
			"-device", "virtio-serial-pci", "-device", "virtconsole,chardev=ctl")
	} else {
		args = append(args, "-serial", "unix:"+v.ctl+",server=on,wait=off")
	}
	if cfgDisk != "" {
		args = append(args, "-drive", "file="+cfgDisk+",format=raw,if=virtio,readonly=on")
	}
	v.cmd = l.in(g.qemu[0], args...)
	v.cmd.Stdout, v.cmd.Stderr = &v.qemuOut, &v.qemuOut
	if err := v.cmd.Start(); err != nil {
		l.t.Fatalf("start vm%d: %v", n, err)
	}
	v.started = time.Now()
	go func() { v.cmd.Wait(); close(v.exited) }()
	l.vms = append(l.vms, v)
	return v
}

// kill ends the VM's qemu at once: a power loss.
func (v *vm) kill() {
	if v.cmd == nil || v.cmd.Process == nil {
		return
	}
	v.cmd.Process.Kill()
	<-v.exited
}

func (v *vm) consoleText() string {
	b, _ := os.ReadFile(v.console)
	return strings.ReplaceAll(string(b), "\r", "")
}

// vipdLines are vipd's own lines on the console (through /dev/kmsg).
func (v *vm) vipdLines() []string {
	var out []string
	for _, line := range strings.Split(v.consoleText(), "\n") {
		if i := strings.Index(line, "vipd: "); i >= 0 {
			out = append(out, line[i:])
		}
	}
	return out
}

// excerpt is the console's lines from the init (rc:, ctl:, vipd-respawn:) and vipd.
func (v *vm) excerpt() string {
	var out []string
	for _, line := range strings.Split(v.consoleText(), "\n") {
		if strings.Contains(line, "vipd: ") || strings.Contains(line, "rc: ") || strings.Contains(line, "ctl: ") || strings.Contains(line, "vipd-respawn: ") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func (v *vm) count(s string) int {
	n := 0
	for _, line := range v.vipdLines() {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// control sends one command on the VM's control line.
func (v *vm) control(t *testing.T, cmd string) {
	t.Helper()
	c, err := net.DialTimeout("unix", v.ctl, 5*time.Second)
	if err != nil {
		t.Fatalf("vm%d control line: %v", v.n, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		t.Fatalf("vm%d control line: %v", v.n, err)
	}
	time.Sleep(200 * time.Millisecond) // let the guest read it before the socket closes
}

var arpReply = regexp.MustCompile(`\[([0-9A-Fa-f:]{17})\]`)

// answering is the set of MACs that answer ARP for the VIP on the bridge
// (busybox arping: every reply, from every host that has the address).
func (l *bootLab) answering() map[string]bool {
	out, _ := l.in("busybox", "arping", "-c", "2", "-w", "2", "-I", "br0", bootVIP).CombinedOutput()
	macs := map[string]bool{}
	for _, m := range arpReply.FindAllStringSubmatch(string(out), -1) {
		macs[strings.ToLower(m[1])] = true
	}
	return macs
}

// holder is the VM whose MAC the client's neighbour table has for the VIP
// after a ping that was answered, or nil.
func (l *bootLab) holder() *vm {
	l.in("ip", "neigh", "flush", "to", bootVIP, "dev", "br0").Run()
	if err := l.in("busybox", "ping", "-c", "1", "-W", "1", bootVIP).Run(); err != nil {
		return nil
	}
	out, _ := l.in("ip", "neigh", "show", "to", bootVIP, "dev", "br0").Output()
	for _, v := range l.vms {
		if strings.Contains(strings.ToLower(string(out)), v.mac) {
			return v
		}
	}
	return nil
}

// waitHolder polls until a VM other than not holds the VIP (bounded) and
// returns it with the time it was first seen.
func (l *bootLab) waitHolder(not *vm, timeout time.Duration) (*vm, time.Time) {
	for end := time.Now().Add(timeout); time.Now().Before(end); {
		if h := l.holder(); h != nil && h != not {
			return h, time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, time.Time{}
}

// waitLeader polls until a VM's console says it leads (its last change of
// state was to leader) and the client reaches that VM (bounded); it
// returns the VM with the time the client reached it. While an earlier
// holder still answers (vm1's bootstrap hold), waitHolder would see that
// one.
func (l *bootLab) waitLeader(timeout time.Duration) (*vm, time.Time) {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, v := range l.vms {
			if v.count("-> leader") > v.count("leader -> ") && l.holder() == v {
				return v, time.Now()
			}
		}
	}
	return nil, time.Time{}
}

// waitConsole waits until every VM's console has a vipd line containing s.
// waitConsoleAny waits (bounded) until v's console has any of ss, and
// records when in v.up, as waitConsole does.
func (l *bootLab) waitConsoleAny(timeout time.Duration, v *vm, ss ...string) bool {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, s := range ss {
			if v.count(s) > 0 {
				v.up = time.Since(v.started)
				return true
			}
		}
	}
	return false
}

func (l *bootLab) waitConsole(s string, timeout time.Duration, vms ...*vm) bool {
	var wg sync.WaitGroup
	ok := true
	var mu sync.Mutex
	for _, v := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
				if v.count(s) > 0 {
					v.up = time.Since(v.started)
					return
				}
			}
			mu.Lock()
			ok = false
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ok
}

// configDisk makes an ext4 image labelled VIPCFG holding vipd.conf.
func (l *bootLab) configDisk(conf string) string {
	dir := filepath.Join(l.dir, "cfg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vipd.conf"), []byte(conf), 0o644); err != nil {
		l.t.Fatal(err)
	}
	img := filepath.Join(l.dir, "cfg.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		l.t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "VIPCFG", "-d", dir, img).CombinedOutput(); err != nil {
		l.t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img
}
