package boot

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The initramfs: a cpio archive in the "newc" format, written here rather
// than with cpio(1) so that the test needs no tool for it and the layout
// is exact: busybox-static, the virtio modules of Debian's cloud kernel,
// a minimal init (docs/busybox), and the vipd binary.

// cpioEntry is one file, directory or symlink of the archive.
type cpioEntry struct {
	name string // without a leading slash
	mode uint32 // type and permission bits
	data []byte // file contents, or the symlink's target
}

const (
	cpioDir  = 0o040000
	cpioFile = 0o100000
	cpioLink = 0o120000
)

// MarshalBinary writes the entries and the trailer in the newc format
// (the kernel's Documentation/driver-api/early-userspace/buffer-format.rst):
// a 110-byte ASCII header of "070701" and 13 eight-digit hex fields, the
// NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes.
func marshalCPIO(entries []cpioEntry) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	write := func(ino int, e cpioEntry) {
		nlink := 1
		if e.mode&0o170000 == cpioDir {
			nlink = 2
		}
		fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, 0, 0, len(e.name)+1, 0)
		b.WriteString(e.name)
		b.WriteByte(0)
		pad()
		b.Write(e.data)
		pad()
	}
	for i, e := range entries {
		write(i+1, e)
	}
	write(0, cpioEntry{name: "TRAILER!!!"})
	return b.Bytes()
}

// image collects the entries of an initramfs, creating parent
// directories on the way.
type image struct {
	entries []cpioEntry
	dirs    map[string]bool
}

func (im *image) dir(name string) {
	if name == "." || name == "" || im.dirs[name] {
		return
	}
	im.dir(filepath.Dir(name))
	im.dirs[name] = true
	im.entries = append(im.entries, cpioEntry{name: name, mode: cpioDir | 0o755})
}

func (im *image) file(name string, mode uint32, data []byte) {
	im.dir(filepath.Dir(name))
	im.entries = append(im.entries, cpioEntry{name: name, mode: cpioFile | mode, data: data})
}

func (im *image) link(name, target string) {
	im.dir(filepath.Dir(name))
	im.entries = append(im.entries, cpioEntry{name: name, mode: cpioLink | 0o777, data: []byte(target)})
}

func (im *image) copy(t testing.TB, name, src string, mode uint32) {
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	im.file(name, mode, b)
}

// moduleOrder resolves the modules wanted (names like "virtio_net") and
// everything they depend on from the kernel's modules.dep, in an order in
// which each comes after its dependencies.
func moduleOrder(depFile io.Reader, wanted []string) ([]string, error) {
	deps := map[string][]string{} // module path -> dependency paths
	byName := map[string]string{} // "virtio_net" -> its path
	sc := bufio.NewScanner(depFile)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		byName[strings.TrimSuffix(filepath.Base(mod), ".ko")] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var order []string
	done := map[string]bool{}
	var visit func(mod string, depth int) error
	visit = func(mod string, depth int) error {
		if done[mod] {
			return nil
		}
		if depth > 32 {
			return fmt.Errorf("modules.dep: a dependency loop at %s", mod)
		}
		ds := append([]string(nil), deps[mod]...)
		sort.Strings(ds)
		for _, d := range ds {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		done[mod] = true
		order = append(order, mod)
		return nil
	}
	for _, w := range wanted {
		mod, ok := byName[w]
		if !ok {
			return nil, fmt.Errorf("modules.dep has no module %s (built in?)", w)
		}
		if err := visit(mod, 0); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// recipeDir holds the busybox init that integrators copy (docs/busybox);
// the VMs boot with exactly that.
var recipeDir = filepath.Join("..", "..", "docs", "busybox")

// bootModules are what the VMs need that Debian's cloud kernel builds as
// modules: the virtio PCI transport, its network and block drivers
// (net_failover and failover come as virtio_net's dependencies), and, on
// arm64, virtio_console for the control line (hvc0: -M virt has one UART);
// and vipd's kernel fence: sch_ingress (the clsact qdisc) and cls_bpf.
// ext4, for the config partition, is built in.
var bootModules = []string{"virtio_pci", "virtio_net", "virtio_blk", "sch_ingress", "cls_bpf"}

// buildInitramfs writes g's initramfs: busybox (linked as /init, so
// that the kernel starts busybox init, which reads /etc/inittab), the
// modules in load order (listed in /etc/modules, which the init loads with
// insmod), the init's files from docs/busybox (inittab, rc, vipd-respawn)
// plus the control line's, and vipd as /sbin/vipd.
func buildInitramfs(t testing.TB, g *guest, out string) {
	t.Helper()
	im := &image{dirs: map[string]bool{}}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "sbin", "bin"} {
		im.dir(d)
	}
	im.copy(t, "bin/busybox", g.busybox, 0o755)
	im.link("init", "/bin/busybox")
	// Every applet as a link, as `busybox --install` would make them: the
	// init's scripts call mount, ip, insmod... by name. The list is the
	// host's busybox-static's (an arm64 busybox cannot run here), the same
	// Debian version and configuration.
	applets, err := exec.Command(busyboxPath(t), "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	for _, name := range strings.Fields(string(applets)) {
		if name != "bin/busybox" {
			im.link(name, "/bin/busybox")
		}
	}
	im.copy(t, "sbin/vipd", g.vipd, 0o755)

	modDir := filepath.Join(g.root, "lib/modules", g.kver)
	dep, err := modulesDep(modDir)
	if err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	mods, err := moduleOrder(dep, g.modules)
	if err != nil {
		t.Fatalf("initramfs (%s): %v", g.arch, err)
	}
	var list []string
	for _, m := range mods {
		name := filepath.Join("lib/modules", g.kver, m)
		im.copy(t, name, filepath.Join(modDir, m), 0o644)
		list = append(list, "/"+name)
	}
	im.file("etc/modules", 0o644, []byte(strings.Join(list, "\n")+"\n"))

	im.copy(t, "etc/init.d/rc", filepath.Join(recipeDir, "rc"), 0o755)
	im.copy(t, "etc/init.d/vipd-respawn", filepath.Join(recipeDir, "vipd-respawn"), 0o755)
	inittab, err := os.ReadFile(filepath.Join(recipeDir, "inittab"))
	if err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	im.file("etc/inittab", 0o644, append(inittab, g.ctlTTY+"::respawn:/etc/ctl\n"...))
	im.file("etc/ctl", 0o755, []byte(ctlScript))
	if err := os.WriteFile(out, marshalCPIO(im.entries), 0o644); err != nil {
		t.Fatal(err)
	}
}

// modulesDep is the kernel's modules.dep, or, for a kernel package that
// was only unpacked (depmod writes modules.dep when it is installed), the
// same lines made from each module's .modinfo "depends=" (the names of
// the modules it needs).
func modulesDep(modDir string) (io.Reader, error) {
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.dep")); err == nil {
		return bytes.NewReader(b), nil
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	byName := map[string]string{}
	needs := map[string][]string{}
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return err
		}
		rel, _ := filepath.Rel(modDir, p)
		byName[strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")] = rel
		f, err := elf.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		sec := f.Section(".modinfo")
		if sec == nil {
			return nil
		}
		info, err := sec.Data()
		if err != nil {
			return fmt.Errorf("%s: %v", p, err)
		}
		for _, kv := range bytes.Split(info, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
				needs[rel] = strings.Split(string(v), ",")
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%v (no modules.dep: reading each module's .modinfo)", err)
	}
	var b strings.Builder
	for _, rel := range byName {
		var deps []string
		for _, n := range needs[rel] {
			d, ok := byName[strings.ReplaceAll(n, "-", "_")]
			if !ok {
				return nil, fmt.Errorf("%s needs %s, which is not among the modules", rel, n)
			}
			deps = append(deps, d)
		}
		fmt.Fprintf(&b, "%s: %s\n", rel, strings.Join(deps, " "))
	}
	return strings.NewReader(b.String()), nil
}

// busyboxPath is the host's static busybox: the initramfs has no libc.
func busyboxPath(t testing.TB) string {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		interp := f.Section(".interp")
		f.Close()
		if interp != nil {
			t.Fatalf("%s is dynamically linked: install Debian's busybox-static", p)
		}
		return p
	}
	t.Fatal("no busybox: install Debian's busybox-static")
	return ""
}

// TestCPIOLayout checks the writer against the newc layout byte for byte.
func TestCPIOLayout(t *testing.T) {
	got := marshalCPIO([]cpioEntry{{name: "a", mode: cpioFile | 0o644, data: []byte("xyz")}})
	want := "070701" + "00000001" + "000081a4" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000003" + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000" +
		"a\x00" + "xyz\x00" + // 110 + 2 = 112, a multiple of 4; the data ends at 115, padded to 116
		"070701" + "00000000" + "00000000" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "0000000b" + "00000000" +
		"TRAILER!!!\x00" + "\x00\x00\x00" // offsets from the archive's start: 116 + 110 + 11 = 237, padded to 240
	if string(got) != want {
		t.Fatalf("cpio bytes:\n%q\nwant\n%q", got, want)
	}
	if len(got)%4 != 0 {
		t.Fatalf("archive length %d is not a multiple of 4", len(got))
	}
}

// TestModuleOrder: dependencies come first, each module once.
func TestModuleOrder(t *testing.T) {
	dep := `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
`
	got, err := moduleOrder(strings.NewReader(dep), []string{"virtio_net", "virtio"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/drivers/net/net_failover.ko", "kernel/net/core/failover.ko", "kernel/drivers/virtio/virtio_ring.ko",
		"kernel/drivers/virtio/virtio.ko", "kernel/drivers/net/virtio_net.ko"}
	pos := map[string]int{}
	for i, m := range got {
		pos[m] = i
	}
	if len(got) != len(want) {
		t.Fatalf("order %v, want the 5 modules once each", got)
	}
	for _, pair := range [][2]string{{"kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko"},
		{"kernel/drivers/virtio/virtio_ring.ko", "kernel/drivers/virtio/virtio.ko"},
		{"kernel/drivers/virtio/virtio.ko", "kernel/drivers/net/virtio_net.ko"},
		{"kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko"}} {
		if pos[pair[0]] > pos[pair[1]] {
			t.Errorf("%s loads after %s: %v", pair[0], pair[1], got)
		}
	}
	if _, err := moduleOrder(strings.NewReader(dep), []string{"ext4"}); err == nil {
		t.Error("a module that is not in modules.dep was not reported")
	}
}
