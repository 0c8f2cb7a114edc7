package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The fence reader and the fence-aware monitor against real filters (root):
// a tiny program of the test's own stands in for vipd's, placed and named
// as vipd places and names it, with a deadline map of the same layout.

// testFence is a loaded stand-in: the program and its deadline map.
type testFence struct{ prog, m int }

// loadTestFence creates an ARRAY map (u32 key, u64 value, one entry) and a
// SCHED_CLS program that references it and passes every frame: the reader
// must find the map through the program, as it does vipd's.
func loadTestFence(t *testing.T) testFence {
	t.Helper()
	ma := struct{ typ, keySize, valueSize, maxEntries uint32 }{unix.BPF_MAP_TYPE_ARRAY, 4, 8, 1}
	m, err := bpfCall(unix.BPF_MAP_CREATE, unsafe.Pointer(&ma), unsafe.Sizeof(ma))
	if err != nil {
		t.Fatalf("create the deadline map: %v", err)
	}
	t.Cleanup(func() { unix.Close(m) })
	insn := func(op, regs uint8, imm int32) []byte {
		b := []byte{op, regs, 0, 0, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(b[4:], uint32(imm))
		return b
	}
	var code []byte
	code = append(code, insn(0x18, 1|1<<4, int32(m))...) // r1 = map (BPF_LD_IMM64, src BPF_PSEUDO_MAP_FD)
	code = append(code, insn(0, 0, 0)...)                // its upper half
	code = append(code, insn(0xb7, 0, 0)...)             // r0 = TC_ACT_OK
	code = append(code, insn(0x95, 0, 0)...)             // exit
	license := []byte("Apache-2.0\x00")
	pa := struct {
		typ, insnCnt   uint32
		insns, license uint64
	}{unix.BPF_PROG_TYPE_SCHED_CLS, uint32(len(code) / 8), uint64(uintptr(unsafe.Pointer(&code[0]))), uint64(uintptr(unsafe.Pointer(&license[0])))}
	prog, err := bpfCall(unix.BPF_PROG_LOAD, unsafe.Pointer(&pa), unsafe.Sizeof(pa))
	runtime.KeepAlive(code)
	runtime.KeepAlive(license)
	if err != nil {
		t.Fatalf("load the stand-in program: %v", err)
	}
	t.Cleanup(func() { unix.Close(prog) })
	return testFence{prog: prog, m: m}
}

// set writes the deadline (CLOCK_MONOTONIC ns; 0: closed).
func (f testFence) set(t *testing.T, deadline int64) {
	t.Helper()
	key, value := uint32(0), uint64(deadline)
	a := bpfElemAttr{mapFD: uint32(f.m), key: uint64(uintptr(unsafe.Pointer(&key))), value: uint64(uintptr(unsafe.Pointer(&value)))}
	_, err := bpfCall(unix.BPF_MAP_UPDATE_ELEM, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(&key)
	runtime.KeepAlive(&value)
	if err != nil {
		t.Fatalf("write the deadline: %v", err)
	}
}

// tcBody is a struct tcmsg for ifindex followed by attrs.
func tcBody(ifindex, handle, parent, info uint32, attrs []byte) []byte {
	b := make([]byte, tcmsgLen)
	binary.NativeEndian.PutUint32(b[4:], ifindex)
	binary.NativeEndian.PutUint32(b[8:], handle)
	binary.NativeEndian.PutUint32(b[12:], parent)
	binary.NativeEndian.PutUint32(b[16:], info)
	return append(b, attrs...)
}

func tcDo(o *Observer, typ uint16, flags netlink.HeaderFlags, body []byte) error {
	_, err := o.c.Execute(netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ),
		Flags: netlink.Request | netlink.Acknowledge | flags}, Data: body})
	return err
}

// attach puts the program on ifindex's egress where vipd puts its own:
// a clsact qdisc, a direct-action cls_bpf filter at our preference.
func (f testFence) attach(t *testing.T, o *Observer, ifindex uint32, name string) {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.String(tcaKind, "clsact")
	attrs, _ := ae.Encode()
	err := tcDo(o, unix.RTM_NEWQDISC, netlink.Create|netlink.Excl, tcBody(ifindex, 0xffff0000, 0xfffffff1, 0, attrs))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		t.Fatalf("add the clsact qdisc: %v", err)
	}
	ae = netlink.NewAttributeEncoder()
	ae.String(tcaKind, fenceKind)
	ae.Nested(tcaOptions, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(6, uint32(f.prog)) // TCA_BPF_FD
		nae.String(tcaBPFName, name)
		nae.Uint32(8, 1) // TCA_BPF_FLAGS: TCA_BPF_FLAG_ACT_DIRECT
		return nil
	})
	attrs, _ = ae.Encode()
	if err := tcDo(o, unix.RTM_NEWTFILTER, netlink.Create|netlink.Excl, tcBody(ifindex, 0, fenceParent, fencePref<<16|ethPAllBE, attrs)); err != nil {
		t.Fatalf("attach the filter: %v", err)
	}
}

// detachTestFence removes every filter at our preference on ifindex.
func detachTestFence(t *testing.T, o *Observer, ifindex uint32) {
	t.Helper()
	if err := tcDo(o, unix.RTM_DELTFILTER, 0, tcBody(ifindex, 0, fenceParent, fencePref<<16|ethPAllBE, nil)); err != nil {
		t.Fatalf("remove the filter: %v", err)
	}
}

// bpfFDs counts this process's open BPF programs and maps.
func bpfFDs(t *testing.T) int {
	t.Helper()
	paths, err := filepath.Glob("/proc/self/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range paths {
		if l, err := os.Readlink(p); err == nil && strings.HasPrefix(l, "anon_inode:bpf-") {
			n++
		}
	}
	return n
}

func monoNow(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano()
}

// fenceNS is a namespace with a veth called eth0 (its peer beside it).
func fenceNS(t *testing.T, what string) (*NS, *Observer, uint32) {
	t.Helper()
	ns := NewNS(t, what)
	ns.IP(t, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	ns.IP(t, "link", "set", "eth0", "up")
	o := ns.Observe(t)
	l, err := o.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return ns, o, l.Index
}

func TestFenceReader(t *testing.T) {
	NeedRoot(t)
	ns, o, eth0 := fenceNS(t, "fence")
	r, err := NewFenceReader(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	read := func() Fence {
		t.Helper()
		f, err := r.Read(eth0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := read(); f.Found {
		t.Fatalf("no qdisc: %v", f)
	}

	a, b := loadTestFence(t), loadTestFence(t)
	base := bpfFDs(t)
	a.attach(t, o, eth0, "not_vipd")
	if f := read(); f.Found {
		t.Fatalf("another name at our preference was taken for ours: %v", f)
	}
	detachTestFence(t, o, eth0)
	a.attach(t, o, eth0, fenceName)
	open := monoNow(t) + int64(time.Hour)
	a.set(t, open)
	f := read()
	if !f.Found || f.Deadline != open || !f.Passes() || f.ProgID == 0 {
		t.Fatalf("open fence: %+v", f)
	}
	a.set(t, 0)
	if f := read(); !f.Found || f.Deadline != 0 || f.Passes() || f.String() != "fence closed" {
		t.Fatalf("closed fence: %+v %v", f, f)
	}
	if n := bpfFDs(t); n != base+2 {
		t.Fatalf("%d BPF descriptors, want %d (ours and the reader's program and map)", n, base+2)
	}

	// Another program replaces it: its own map is read, the old
	// descriptors are closed.
	detachTestFence(t, o, eth0)
	b.attach(t, o, eth0, fenceName)
	past := monoNow(t) - int64(time.Second)
	b.set(t, past)
	g := read()
	if !g.Found || g.ProgID == f.ProgID || g.Deadline != past || g.Passes() || !strings.HasPrefix(g.String(), "fence closed 1") {
		t.Fatalf("replaced fence: %+v %v", g, g)
	}
	if n := bpfFDs(t); n != base+2 {
		t.Fatalf("%d BPF descriptors after the program changed, want %d", n, base+2)
	}

	detachTestFence(t, o, eth0)
	if f := read(); f.Found || !f.Passes() || f.String() != "no kernel fence" {
		t.Fatalf("filter removed: %+v", f)
	}
	if n := bpfFDs(t); n != base {
		t.Fatalf("%d BPF descriptors after the filter went, want %d", n, base)
	}
	r.Close()
	if n := bpfFDs(t); n != base {
		t.Fatalf("%d BPF descriptors after Close, want %d", n, base)
	}
}

// TestMonitorFence: a node whose fence is closed keeps the address without
// speaking, so another may gain it; the same fence opening again, and a
// gain beside an open fence, are overlaps.
func TestMonitorFence(t *testing.T) {
	NeedRoot(t)
	ns1, o1, eth1 := fenceNS(t, "mon1")
	ns2, _, _ := fenceNS(t, "mon2")
	m := startMonitor(t, []*Node{{Name: "n1", NS: ns1}, {Name: "n2", NS: ns2}}, netip.MustParseAddr(VIP))
	withAddr := func(want ...int) {
		t.Helper()
		WaitFor(t, 5*time.Second, fmt.Sprintf("nodes %v to have the address", want), func() bool {
			return fmt.Sprint(m.WithAddress()) == fmt.Sprint(want)
		})
	}
	speaking := func(want ...int) {
		t.Helper()
		if h, _ := m.Current(); fmt.Sprint(h) != fmt.Sprint(want) {
			t.Fatalf("speaking: %v, want %v\n%s", h, want, m.History())
		}
	}

	f := loadTestFence(t)
	f.attach(t, o1, eth1, fenceName)
	f.set(t, monoNow(t)+int64(time.Hour))
	ns1.IP(t, "addr", "add", VIP+"/32", "dev", "eth0")
	withAddr(0)
	speaking(0)
	f.set(t, 0) // n1 frozen: the address stays, the fence shuts
	speaking()
	ns2.IP(t, "addr", "add", VIP+"/32", "dev", "eth0")
	withAddr(0, 1)
	speaking(1)
	if o := m.Overlaps(); len(o) != 0 {
		t.Fatalf("overlaps beside a closed fence: %q", o)
	}

	f.set(t, monoNow(t)+int64(time.Hour)) // n1 thaws: the sweep must see it
	WaitFor(t, time.Second, "the sweep to see n1 speak again", func() bool { return len(m.Overlaps()) == 1 })
	ns2.IP(t, "addr", "del", VIP+"/32", "dev", "eth0")
	withAddr(0)
	ns2.IP(t, "addr", "add", VIP+"/32", "dev", "eth0")
	withAddr(0, 1)
	o := m.Overlaps()
	at := regexp.MustCompile(` at ([0-9.]+)s `) // as test/soak reads them
	if len(o) != 2 || !strings.HasPrefix(o[0], "n1's fence opened") || !strings.HasSuffix(o[0], "(no kernel fence)") ||
		!strings.HasPrefix(o[1], "n2 gained") || !strings.Contains(o[1], "(fence open ") || !at.MatchString(o[0]) || !at.MatchString(o[1]) {
		t.Fatalf("overlaps: %q\n%s", o, m.History())
	}
	t.Logf("overlaps:\n%s\nhistory:\n%s", strings.Join(o, "\n"), m.History())
}
