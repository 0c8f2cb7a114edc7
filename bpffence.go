package main

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The kernel fence (issue 24, first part): an eBPF program on the VIP
// interface's egress drops every frame that speaks for the VIP once the
// kernel's monotonic clock passes a deadline kept in a BPF map. The daemon
// moves the deadline forward on each acknowledged renewal; a frozen or
// wedged process cannot, so the node falls silent on time, to the
// millisecond, whatever its process does, including a frame that a freeze
// held between the deadline check and sendto.
//
// A frame speaks for the VIP if it is
//   - ARP whose sender IP is a VIP (replies, requests, announcements; a
//     probe's sender is 0.0.0.0 and passes);
//   - IPv4 from a VIP, or IPv6 from a VIP;
//   - an ICMPv6 neighbour advertisement whose target is a VIP (its source
//     is often the link-local address).
//
// The program is assembled here, as the NDP socket's classic BPF filter
// is, and loaded with bpf(2); it is attached as a direct-action cls_bpf
// filter under a clsact qdisc, with raw rtnetlink.

// fenceProgram is an assembled eBPF program: 8-byte instructions.
type fenceProgram []bpfInsn

// bpfInsn is one eBPF instruction (include/uapi/linux/bpf.h, struct
// bpf_insn): opcode, destination and source registers, offset, immediate.
type bpfInsn struct {
	op       uint8
	dst, src uint8
	off      int16
	imm      int32
}

// MarshalBinary encodes the instruction as the kernel reads it (little
// endian on the machines vipd builds for).
func (i bpfInsn) MarshalBinary() ([]byte, error) {
	b := make([]byte, 8)
	b[0] = i.op
	b[1] = i.dst&0x0f | i.src<<4
	binary.LittleEndian.PutUint16(b[2:], uint16(i.off))
	binary.LittleEndian.PutUint32(b[4:], uint32(i.imm))
	return b, nil
}

// eBPF opcodes and registers used here.
const (
	bpfLdxW  = 0x61 // dst = *(u32 *)(src + off)
	bpfLdxH  = 0x69 // dst = *(u16 *)(src + off)
	bpfLdxB  = 0x71 // dst = *(u8 *)(src + off)
	bpfLdxDW = 0x79 // dst = *(u64 *)(src + off)
	bpfStW   = 0x62 // *(u32 *)(dst + off) = imm
	bpfMovX  = 0xbf // dst = src (64 bit)
	bpfMovK  = 0xb7 // dst = imm
	bpfAddK  = 0x07 // dst += imm
	bpfLdDW  = 0x18 // dst = imm64 (two instructions); src 1: a map's fd
	bpfJeqK  = 0x15 // if dst == imm goto +off
	bpfJneK  = 0x55 // if dst != imm goto +off
	// if (u32)dst != (u32)imm goto +off: an immediate is sign-extended to
	// 64 bits, a 32-bit load is not, so words with the top bit set (most
	// IPv6 addresses) compare only as 32-bit values.
	bpfJne32K = 0x56
	bpfJgtX   = 0x2d // if dst > src goto +off (unsigned)
	bpfJa     = 0x05 // goto +off
	bpfCall   = 0x85
	bpfExit   = 0x95

	r0, r1, r2, r3, r4, r5, r6, r10 = 0, 1, 2, 3, 4, 5, 6, 10

	helperMapLookup = 1
	helperKtimeNs   = 5 // bpf_ktime_get_ns: CLOCK_MONOTONIC

	tcActUnspec = -1 // no verdict: the next filter decides (another group's, other software's)
	tcActShot   = 2

	skbData    = 76 // offsetof(struct __sk_buff, data)
	skbDataEnd = 80 // offsetof(struct __sk_buff, data_end)
)

// le32 is a 4-byte field of a frame as a little-endian load sees it.
func le32(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) }

// le16 is a 2-byte network-order value as a little-endian load sees it.
func le16(v uint16) int32 { return int32(v>>8 | v<<8&0xff00) }

// asm collects instructions with labels, resolved at the end.
type asm struct {
	insns  []bpfInsn
	labels map[string]int
	fixups map[int]string // instruction index -> label its offset jumps to
}

func (a *asm) emit(i bpfInsn) { a.insns = append(a.insns, i) }

// jump emits a jump to label, resolved by done.
func (a *asm) jump(op, dst, src uint8, imm int32, label string) {
	a.fixups[len(a.insns)] = label
	a.emit(bpfInsn{op: op, dst: dst, src: src, imm: imm})
}

func (a *asm) label(name string) { a.labels[name] = len(a.insns) }

func (a *asm) done() (fenceProgram, error) {
	for at, l := range a.fixups {
		to, ok := a.labels[l]
		if !ok {
			return nil, fmt.Errorf("assemble the fence: no label %q", l)
		}
		a.insns[at].off = int16(to - at - 1)
	}
	return fenceProgram(a.insns), nil
}

// need checks that off bytes of the frame are there (r2: data, r3:
// data_end), else the frame passes: it cannot speak for the VIP.
func (a *asm) need(off int32) {
	a.emit(bpfInsn{op: bpfMovX, dst: r4, src: r2})
	a.emit(bpfInsn{op: bpfAddK, dst: r4, imm: off})
	a.jump(bpfJgtX, r4, r3, 0, "pass")
}

// match jumps to "fenced" if the 4n bytes at off (from r2) are ip.
func (a *asm) match(off int16, ip netip.Addr, next string) {
	b := ip.AsSlice()
	for i := 0; i < len(b); i += 4 {
		a.emit(bpfInsn{op: bpfLdxW, dst: r5, src: r2, off: off + int16(i)})
		a.jump(bpfJne32K, r5, 0, le32(b[i:i+4]), next)
	}
	a.jump(bpfJa, 0, 0, 0, "fenced")
}

// assembleFence builds the program for vips, reading the deadline from the
// map with fd mapFD (key 0: CLOCK_MONOTONIC nanoseconds).
func assembleFence(vips []netip.Prefix, mapFD int) (fenceProgram, error) {
	a := &asm{labels: map[string]int{}, fixups: map[int]string{}}
	a.emit(bpfInsn{op: bpfLdxW, dst: r2, src: r1, off: skbData})
	a.emit(bpfInsn{op: bpfLdxW, dst: r3, src: r1, off: skbDataEnd})
	a.need(14)
	a.emit(bpfInsn{op: bpfLdxH, dst: r5, src: r2, off: 12}) // EtherType
	a.jump(bpfJeqK, r5, 0, le16(unix.ETH_P_ARP), "arp")     // small, positive: 64-bit compares are right
	a.jump(bpfJeqK, r5, 0, le16(unix.ETH_P_IP), "ipv4")
	a.jump(bpfJeqK, r5, 0, le16(unix.ETH_P_IPV6), "ipv6")
	a.jump(bpfJa, 0, 0, 0, "pass")

	var v4, v6 []netip.Addr
	for _, p := range vips {
		if p.Addr().Is4() {
			v4 = append(v4, p.Addr())
		} else {
			v6 = append(v6, p.Addr())
		}
	}
	a.label("arp")
	a.need(14 + 28)
	a.matchAll(14+14, v4, "pass") // sender protocol address
	a.label("ipv4")
	a.need(14 + 20)
	a.matchAll(14+12, v4, "pass") // source address
	a.label("ipv6")
	a.need(14 + 40)
	a.matchAll(14+8, v6, "ipv6.na") // source address
	a.label("ipv6.na")
	a.emit(bpfInsn{op: bpfLdxB, dst: r5, src: r2, off: 14 + 6}) // next header
	a.jump(bpfJneK, r5, 0, unix.IPPROTO_ICMPV6, "pass")
	a.need(14 + 40 + 24)
	a.emit(bpfInsn{op: bpfLdxB, dst: r5, src: r2, off: 14 + 40}) // ICMPv6 type
	a.jump(bpfJneK, r5, 0, 136, "pass")                          // neighbour advertisement
	a.matchAll(14+40+8, v6, "pass")                              // target address

	// fenced: drop the frame once the deadline has passed (or is gone).
	a.label("fenced")
	a.emit(bpfInsn{op: bpfStW, dst: r10, off: -4, imm: 0})
	a.emit(bpfInsn{op: bpfMovX, dst: r2, src: r10})
	a.emit(bpfInsn{op: bpfAddK, dst: r2, imm: -4})
	a.emit(bpfInsn{op: bpfLdDW, dst: r1, src: 1, imm: int32(mapFD)})
	a.emit(bpfInsn{})
	a.emit(bpfInsn{op: bpfCall, imm: helperMapLookup})
	a.jump(bpfJeqK, r0, 0, 0, "drop")
	a.emit(bpfInsn{op: bpfLdxDW, dst: r6, src: r0})
	a.emit(bpfInsn{op: bpfCall, imm: helperKtimeNs})
	a.jump(bpfJgtX, r0, r6, 0, "drop")
	a.label("pass")
	a.emit(bpfInsn{op: bpfMovK, dst: r0, imm: tcActUnspec})
	a.emit(bpfInsn{op: bpfExit})
	a.label("drop")
	a.emit(bpfInsn{op: bpfMovK, dst: r0, imm: tcActShot})
	a.emit(bpfInsn{op: bpfExit})
	return a.done()
}

// matchAll jumps to "fenced" if the address at off is one of ips, and to
// then if it is none.
func (a *asm) matchAll(off int16, ips []netip.Addr, then string) {
	for i, ip := range ips {
		next := fmt.Sprintf("%s.after.%d.%d", then, off, i)
		a.match(off, ip, next)
		a.label(next)
	}
	a.jump(bpfJa, 0, 0, 0, then)
}

// MarshalBinary is the program as bpf(2) takes it.
func (p fenceProgram) MarshalBinary() ([]byte, error) {
	var out []byte
	for _, i := range p {
		b, _ := i.MarshalBinary()
		out = append(out, b...)
	}
	return out, nil
}

// bpf(2) commands' attributes (union bpf_attr), the fields vipd sets.
type bpfMapCreateAttr struct {
	mapType, keySize, valueSize, maxEntries, mapFlags uint32
}

type bpfMapElemAttr struct {
	mapFD uint32
	_     uint32
	key   uint64
	value uint64
	flags uint64
}

type bpfProgLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
}

func bpfSys(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// kernelFence is the loaded fence: its map (the deadline) and program,
// and the interface it is attached to (0: none). Loading needs CAP_BPF
// (or CAP_SYS_ADMIN), which vipd has only at start; attaching and moving
// the deadline need no more than it keeps (CAP_NET_ADMIN, the map's fd).
type kernelFence struct {
	mapFD, progFD int
	rt            *rtnl
	handle        uint32 // our group's filter (fenceHandle)
	ifindex       uint32
	last          int64  // the deadline last written, CLOCK_MONOTONIC ns
	vips          string // the VIPs the program was assembled for (vipsKey)
	addrs         []netip.Addr
}

// loadFence creates the deadline map (closed: deadline 0) and loads the
// program for vips; attach puts it on an interface.
func loadFence(rt *rtnl, vips []netip.Prefix, handle uint32) (*kernelFence, error) {
	ma := bpfMapCreateAttr{mapType: unix.BPF_MAP_TYPE_ARRAY, keySize: 4, valueSize: 8, maxEntries: 1}
	mapFD, err := bpfSys(unix.BPF_MAP_CREATE, unsafe.Pointer(&ma), unsafe.Sizeof(ma))
	if err != nil {
		return nil, fmt.Errorf("kernel fence: create its map: %w", err)
	}
	f := &kernelFence{mapFD: mapFD, progFD: -1, rt: rt, handle: handle}
	prog, err := assembleFence(vips, mapFD)
	if err == nil {
		f.progFD, err = loadProgram(prog)
	}
	if err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

func loadProgram(prog fenceProgram) (int, error) {
	code, _ := prog.MarshalBinary()
	license := []byte("Apache-2.0\x00")
	log := make([]byte, 64<<10)
	pa := bpfProgLoadAttr{progType: unix.BPF_PROG_TYPE_SCHED_CLS, insnCnt: uint32(len(prog)),
		insns: uint64(uintptr(unsafe.Pointer(&code[0]))), license: uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: 1, logSize: uint32(len(log)), logBuf: uint64(uintptr(unsafe.Pointer(&log[0])))}
	fd, err := bpfSys(unix.BPF_PROG_LOAD, unsafe.Pointer(&pa), unsafe.Sizeof(pa))
	runtime.KeepAlive(code)
	runtime.KeepAlive(license)
	runtime.KeepAlive(log)
	if err != nil {
		if msg := cString(log); msg != "" {
			return -1, fmt.Errorf("kernel fence: load the program: %w: %s", err, msg)
		}
		return -1, fmt.Errorf("kernel fence: load the program: %w (it needs CAP_BPF and CAP_NET_ADMIN)", err)
	}
	return fd, nil
}

// set moves the deadline to until, converted to CLOCK_MONOTONIC: the
// program compares it with bpf_ktime_get_ns.
func (f *kernelFence) set(until time.Time) error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	mono := ts.Nano() + int64(time.Until(until))
	if until.IsZero() || mono < 0 {
		mono = 0
	}
	if mono == f.last {
		return nil // only 0 repeats: a deadline carries the clock's nanoseconds
	}
	key, value := uint32(0), uint64(mono)
	ea := bpfMapElemAttr{mapFD: uint32(f.mapFD), key: uint64(uintptr(unsafe.Pointer(&key))), value: uint64(uintptr(unsafe.Pointer(&value)))}
	_, err := bpfSys(unix.BPF_MAP_UPDATE_ELEM, unsafe.Pointer(&ea), unsafe.Sizeof(ea))
	runtime.KeepAlive(&key)
	runtime.KeepAlive(&value)
	if err != nil {
		return fmt.Errorf("kernel fence: move its deadline: %w", err)
	}
	f.last = mono
	return nil
}

// tc constants (include/uapi/linux/pkt_sched.h, pkt_cls.h).
const (
	tcHClsact     = 0xfffffff1
	tcHMinEgress  = 0xfff3
	tcaKind       = 1
	tcaOptions    = 2
	tcaBPFFD      = 6
	tcaBPFName    = 7
	tcaBPFFlags   = 8
	tcaBPFActDir  = 1
	fencePriority = 0xbeef // our filter's preference, so that we find and remove only it
)

// tcMsg is struct tcmsg.
type tcMsg struct {
	ifindex              int32
	handle, parent, info uint32
}

func (m tcMsg) MarshalBinary() []byte {
	b := make([]byte, 20)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(m.ifindex))
	binary.NativeEndian.PutUint32(b[8:], m.handle)
	binary.NativeEndian.PutUint32(b[12:], m.parent)
	binary.NativeEndian.PutUint32(b[16:], m.info)
	return b
}

// attach adds a clsact qdisc to ifindex (if it has none) and the program
// as a direct-action filter on its egress, after removing it from the
// interface it was on, if any.
func (f *kernelFence) attach(ifindex uint32) error {
	if f.ifindex == ifindex {
		return nil
	}
	f.detach()
	ae := netlink.NewAttributeEncoder()
	ae.String(tcaKind, "clsact")
	attrs, _ := ae.Encode()
	q := tcMsg{ifindex: int32(ifindex), handle: 0xffff0000, parent: tcHClsact}
	_, err := f.rt.execute(unix.RTM_NEWQDISC, netlink.Acknowledge|netlink.Create|netlink.Excl, append(q.MarshalBinary(), attrs...))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("kernel fence: add the clsact qdisc: %w", err)
	}
	ae = netlink.NewAttributeEncoder()
	ae.String(tcaKind, "bpf")
	ae.Nested(tcaOptions, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(tcaBPFFD, uint32(f.progFD))
		nae.String(tcaBPFName, "vipd_fence")
		nae.Uint32(tcaBPFFlags, tcaBPFActDir)
		return nil
	})
	attrs, _ = ae.Encode()
	// A filter of ours left by an earlier run (killed before it could
	// remove it, or the image before a SIGHUP) goes first: cls_bpf runs
	// the filters of one preference in turn and the first verdict wins, so
	// an old one, whose deadline nobody moves any more, would silence the
	// VIP for good.
	if err := removeFenceFilter(f.rt, ifindex, f.handle); err != nil {
		return err
	}
	if _, err := f.rt.execute(unix.RTM_NEWTFILTER, netlink.Acknowledge|netlink.Create|netlink.Excl, append(fenceFilter(ifindex, f.handle).MarshalBinary(), attrs...)); err != nil {
		return fmt.Errorf("kernel fence: attach the filter: %w", err)
	}
	f.ifindex = ifindex
	return nil
}

// removeFenceFilter deletes our group's filter (handle) on ifindex's
// egress, whoever left it; none there is no error. Other groups' filters
// at our preference, and everyone else's, stay.
func removeFenceFilter(rt *rtnl, ifindex, handle uint32) error {
	_, err := rt.execute(unix.RTM_DELTFILTER, netlink.Acknowledge, fenceFilter(ifindex, handle).MarshalBinary())
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("kernel fence: remove the filter: %w", err)
	}
	return nil
}

// fenceFilter names our group's filter on ifindex's egress: our
// preference, the group's handle.
func fenceFilter(ifindex, handle uint32) tcMsg {
	return tcMsg{ifindex: int32(ifindex), handle: handle, parent: tcHClsact&0xffff0000 | tcHMinEgress,
		info: fencePriority<<16 | uint32(le16(unix.ETH_P_ALL))}
}

// fenceHandle is the filter handle of the group vip.key: groups share
// our preference on a shared clsact, each replaces only its own filter,
// and a vipd restarted after a crash finds the one it left.
func fenceHandle(key string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return max(h.Sum32(), 1) // 0 would mean every filter of the preference
}

// detach removes the filter from the interface it is on.
func (f *kernelFence) detach() error {
	if f.ifindex == 0 {
		return nil
	}
	err := removeFenceFilter(f.rt, f.ifindex, f.handle)
	f.ifindex = 0
	return err
}

// close detaches the filter and closes the program and the map.
func (f *kernelFence) close() error {
	err := f.detach()
	if f.progFD >= 0 {
		unix.Close(f.progFD)
		f.progFD = -1
	}
	if f.mapFD >= 0 {
		unix.Close(f.mapFD)
		f.mapFD = -1
	}
	return err
}

// fenceFDEnv names the program's and the map's descriptors that a SIGHUP
// re-exec hands to the new image, which has no CAP_BPF to load its own.
const fenceFDEnv = "VIPD_FENCE_FD"

// fenceSink is the kernel fence as the node drives it: attached to the
// link in use, its deadline the fence's while the node holds the VIP.
type fenceSink interface {
	attach(ifindex uint32) error
	set(until time.Time) error
	inForce() bool // attached to a link
	check() error  // the filter is still there (someone may have removed it, or the qdisc)
}

// noFence stands in when no fence could be loaded: it only removes a
// filter that an earlier image left on the link, whose deadline nobody
// would move any more.
type noFence struct {
	rt     *rtnl
	handle uint32
	vips   []netip.Prefix
	log    *logger
}

// attach removes a filter of our group that an earlier image left on the
// link, whose deadline nobody would move any more. A copy of the VIP that
// image left there goes first: the filter kept it silent, and this vipd,
// by the TTL rule, cannot vouch for it.
func (n noFence) attach(ifindex uint32) error {
	if there, err := filterPresent(n.rt, ifindex, n.handle); err != nil || !there {
		return err
	}
	for _, p := range n.vips {
		if gone, err := n.rt.delAddr(ifindex, p); err != nil {
			return fmt.Errorf("kernel fence: remove %s under the filter an earlier run left: %w", p, err)
		} else if gone {
			n.log.infof("removed %s, left silent under the kernel fence of an earlier run, before removing that filter", p)
		}
	}
	return removeFenceFilter(n.rt, ifindex, n.handle)
}

func (noFence) check() error        { return nil }
func (noFence) set(time.Time) error { return nil }
func (noFence) inForce() bool       { return false }

func (f *kernelFence) inForce() bool { return f.ifindex != 0 }

// check says whether our filter is still on the link: a `tc qdisc del`, a
// CNI that resets the clsact qdisc, would take it away without a word.
// Gone, the fence is no longer in force (the next attach puts it back).
func (f *kernelFence) check() error {
	if f.ifindex == 0 {
		return nil
	}
	there, err := filterPresent(f.rt, f.ifindex, f.handle)
	if err != nil || there {
		return err
	}
	f.ifindex = 0
	return errors.New("kernel fence: our filter is gone from the link (removed by someone else)")
}

// filterPresent asks the kernel for our group's filter on ifindex.
func filterPresent(rt *rtnl, ifindex, handle uint32) (bool, error) {
	_, err := rt.execute(unix.RTM_GETTFILTER, netlink.Request, fenceFilter(ifindex, handle).MarshalBinary())
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENODEV):
		return false, nil
	}
	return false, fmt.Errorf("kernel fence: look for the filter: %w", err)
}

// stop ends the fence at a graceful stop. The filter goes, unless a copy
// of a VIP is still on the link (its removal failed, or a resumed copy):
// then it stays, closed, so that the copy stays silent, and the next vipd
// replaces it.
func (f *kernelFence) stop(log *logger) {
	if f.ifindex != 0 {
		if left := vipsOn(f.rt, f.ifindex, f.addrs); len(left) > 0 {
			if err := f.set(time.Time{}); err == nil {
				log.warnf("kernel fence left in place, closed: %v still on the link (the next vipd replaces it)", left)
				f.ifindex = 0 // kept: close only drops our descriptors
			}
		}
	}
	if err := f.close(); err != nil {
		log.warnf("%v", err)
	}
}

// vipsOn lists which of addrs are on ifindex (none if the kernel does not
// say).
func vipsOn(rt *rtnl, ifindex uint32, addrs []netip.Addr) []netip.Addr {
	all, err := rt.addrs(unix.AF_UNSPEC)
	if err != nil {
		return nil
	}
	var on []netip.Addr
	for _, a := range all {
		if a.Index == ifindex && slices.Contains(addrs, a.Address) {
			on = append(on, a.Address)
		}
	}
	return on
}

// vipAddrs are the VIPs' addresses.
func vipAddrs(vips []netip.Prefix) []netip.Addr {
	a := make([]netip.Addr, len(vips))
	for i, p := range vips {
		a[i] = p.Addr()
	}
	return a
}

// vipsKey names the VIPs a program was assembled for.
func vipsKey(vips []netip.Prefix) string { return prefixList(vips) }

// startFence adopts the fence a re-exec handed over (for the same VIPs),
// or loads one; without one (no CAP_BPF, an old kernel) it says so once
// and returns noFence.
func startFence(rt *rtnl, vips []netip.Prefix, key string, log *logger) fenceSink {
	handle := fenceHandle(key)
	if os.Getenv("VIPD_TEST_NO_KERNEL_FENCE") != "" {
		log.infof("no kernel fence: VIPD_TEST_NO_KERNEL_FENCE is set (tests only)")
		return noFence{rt, handle, vips, log}
	}
	if f := adoptFence(rt, vips, handle); f != nil {
		f.addrs = vipAddrs(vips)
		return f
	}
	f, err := loadFence(rt, vips, handle)
	if err != nil {
		log.warnf("no kernel fence: %v (vipd runs on by the TTL rule; a frame held up by a freeze between the deadline check and its send can still leave late: docs/design.md section 8a)", err)
		return noFence{rt, handle, vips, log}
	}
	f.vips, f.addrs = vipsKey(vips), vipAddrs(vips)
	return f
}

// adoptFence takes over the descriptors a re-exec handed over, if they
// are a BPF program and map and were loaded for these VIPs; otherwise it
// closes them (the filter they serve is removed at attach).
func adoptFence(rt *rtnl, vips []netip.Prefix, handle uint32) *kernelFence {
	word, ok := os.LookupEnv(fenceFDEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(fenceFDEnv) // nothing started later inherits it
	var prog, m int
	var ifindex, handed uint32
	var key string
	if n, _ := fmt.Sscanf(word, "%d,%d,%d,%d,%s", &prog, &m, &ifindex, &handed, &key); n != 5 {
		return nil
	}
	isBPF := func(fd int, kind string) bool {
		link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		return err == nil && link == "anon_inode:bpf-"+kind
	}
	if !isBPF(prog, "prog") || !isBPF(m, "map") {
		return nil // not ours: left alone
	}
	for _, fd := range []int{prog, m} {
		unix.CloseOnExec(fd)
	}
	// The handed-over filter is the old image's group's (handed): a
	// vip.key that changed with the SIGHUP names another.
	f := &kernelFence{mapFD: m, progFD: prog, rt: rt, ifindex: ifindex, vips: key, handle: handed,
		last: -1} // unknown: the first set writes, even a 0
	if key != vipsKey(vips) {
		f.close()
		return nil
	}
	if handed != handle {
		f.detach()
		f.handle = handle
	}
	return f
}

// inherit makes the program and map survive the exec that follows and
// returns the environment word that names them; undo puts their
// close-on-exec back if the exec fails.
func (f *kernelFence) inherit() (string, func(), error) {
	none := func() {}
	if f == nil {
		return "", none, nil
	}
	for _, fd := range []int{f.progFD, f.mapFD} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return "", none, nil
		}
	}
	undo := func() {
		for _, fd := range []int{f.progFD, f.mapFD} {
			unix.CloseOnExec(fd)
		}
	}
	return fmt.Sprintf("%s=%d,%d,%d,%d,%s", fenceFDEnv, f.progFD, f.mapFD, f.ifindex, f.handle, f.vips), undo, nil
}

// checkFenceLine starts the line of vipd -check that says which fence is
// in force; a SIGHUP re-exec looks for it to know that the new binary
// takes over the kernel fence (resume.go checkReload).
const checkFenceLine = "# kernel fence: "

// fenceAvailable says, for vipd -check, whether the kernel fence can be
// loaded here (it loads and closes one) and what it means for cfg.
func fenceAvailable(cfg Config) string {
	f, err := loadFence(nil, cfg.Addresses, fenceHandle(cfg.Key))
	if err != nil {
		return fmt.Sprintf("not available to this process (%v): the address lifetime and the TTL rule fence the VIP, failover after vip.ttl (%v)", err, cfg.TTL)
	}
	f.close()
	return fmt.Sprintf("available: the VIP's frames are dropped in the kernel at the holder's deadline; failover after vip.window (%s)", cmp.Or(cfg.Window, cfg.TTL))
}

// handOffUnfenced is a SIGHUP re-exec into a binary that cannot take over
// the kernel fence (a vipd before 0.2.0). A holder refuses it: the new
// image would hold the VIP without the filter while its entry still
// advertises the fenced window, and its lifetime rule differs. A
// candidate removes its filter (the old image would never move its
// deadline, which would silence the VIP on this node for good) and goes.
// If the exec then fails, the process has lost its fence under an entry
// that advertises it: it exits, for its supervisor to start it afresh.
func handOffUnfenced(r stateRecord, f *kernelFence, exec func() error, log *logger) error {
	if r.State == stateLeader.String() || r.State == stateBootstrap.String() {
		return errors.New("the new binary cannot take over the kernel fence (a vipd before 0.2.0): restart vipd instead, which hands the VIP over gracefully")
	}
	log.infof("the new binary cannot take over the kernel fence (a vipd before 0.2.0): removing the filter; it runs by the TTL rule")
	if err := f.close(); err != nil {
		log.warnf("%v", err)
	}
	err := exec()
	log.errorf("%v; the kernel fence is gone with an entry that advertises it: exiting, to be started afresh", err)
	os.Exit(exitRuntime)
	return err
}

// stopBeforeSend is a test hook: with VIPD_TEST_STOP_BEFORE_SEND=N, the
// process stops itself (SIGSTOP) right before the Nth claiming frame is
// sent, after its deadline check, which is the window only the kernel
// fence closes (test/scenario/fence_test.go). Without it, nil.
func stopBeforeSend(log *logger) func() {
	n, err := strconv.Atoi(os.Getenv("VIPD_TEST_STOP_BEFORE_SEND"))
	if err != nil || n <= 0 {
		return nil
	}
	log.infof("VIPD_TEST_STOP_BEFORE_SEND=%d: stopping before the %dth claiming frame (tests only)", n, n)
	count := 0
	return func() {
		if count++; count == n {
			// Sent to this thread, not the process: kill(2) may wake
			// another thread to begin the stop while this one goes on
			// into sendto, which made the test hit the window only
			// sometimes. A signal to the current thread is acted on
			// before the system call returns.
			runtime.LockOSThread()
			unix.Tgkill(os.Getpid(), unix.Gettid(), unix.SIGSTOP)
			runtime.UnlockOSThread()
		}
	}
}
