package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"vipd/test/lab"
)

// fenceFrame is a test frame and whether it speaks for the VIP. Each has
// its own source MAC (02:00:5e:00:53:xx), so the receiver can tell them
// apart from what the kernel sends by itself.
type fenceFrame struct {
	name   string
	fenced bool
	frame  []byte
}

func fenceFrames(vip4, vip6 netip.Addr) []fenceFrame {
	other4, other6 := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")
	mac := func(i byte) []byte { return []byte{2, 0, 0x5e, 0, 0x53, 0x10 + i} }
	eth := func(i byte, typ uint16, payload []byte) []byte {
		b := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac(i)...)
		b = binary.BigEndian.AppendUint16(b, typ)
		return append(b, payload...)
	}
	arp := func(i byte, op uint16, sender, target netip.Addr) []byte {
		p := []byte{0, 1, 8, 0, 6, 4}
		p = binary.BigEndian.AppendUint16(p, op)
		p = append(append(p, mac(i)...), sender.AsSlice()...)
		p = append(append(p, make([]byte, 6)...), target.AsSlice()...)
		return eth(i, unix.ETH_P_ARP, p)
	}
	ipv4 := func(i byte, src netip.Addr) []byte {
		h := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
		h = append(append(h, src.AsSlice()...), 192, 0, 2, 1)
		return eth(i, unix.ETH_P_IP, append(h, make([]byte, 8)...))
	}
	ipv6 := func(i byte, src netip.Addr, next byte, payload []byte) []byte {
		h := []byte{0x60, 0, 0, 0}
		h = binary.BigEndian.AppendUint16(h, uint16(len(payload)))
		h = append(h, next, 255)
		h = append(append(h, src.AsSlice()...), netip.MustParseAddr("ff02::1").AsSlice()...)
		return eth(i, unix.ETH_P_IPV6, append(h, payload...))
	}
	na := func(target netip.Addr) []byte {
		return append([]byte{136, 0, 0, 0, 0x20, 0, 0, 0}, target.AsSlice()...)
	}
	linkLocal := netip.MustParseAddr("fe80::1")
	return []fenceFrame{
		{"ARP announcement of the VIP", true, arp(1, 1, vip4, vip4)},
		{"ARP reply from the VIP", true, arp(2, 2, vip4, other4)},
		{"ARP probe for the VIP (sender 0.0.0.0)", false, arp(3, 1, netip.IPv4Unspecified(), vip4)},
		{"ARP from another address", false, arp(4, 1, other4, vip4)},
		{"IPv4 from the VIP", true, ipv4(5, vip4)},
		{"IPv4 from another address", false, ipv4(6, other4)},
		{"IPv6 from the VIP", true, ipv6(7, vip6, unix.IPPROTO_UDP, make([]byte, 8))},
		{"IPv6 from another address", false, ipv6(8, other6, unix.IPPROTO_UDP, make([]byte, 8))},
		{"NA for the VIP from the link-local address", true, ipv6(9, linkLocal, unix.IPPROTO_ICMPV6, na(vip6))},
		{"NA for another address", false, ipv6(10, linkLocal, unix.IPPROTO_ICMPV6, na(other6))},
		{"a short frame", false, eth(11, unix.ETH_P_IP, []byte{0x45})},
	}
}

// TestKernelFence loads the fence on a veth's egress in a namespace and
// sends frames through it, seen from the peer namespace: before the
// deadline everything passes; after it, exactly the frames that speak for
// the VIP are dropped; with the fence removed, everything passes again.
func TestKernelFence(t *testing.T) {
	// .200: its last byte sets the sign bit of the word the program compares.
	vip4, vip6 := netip.MustParseAddr("192.0.2.200"), netip.MustParseAddr("2001:db8::100")
	rt, tx, rx, ifindex := fenceVeth(t)
	f, err := loadFence(rt, []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)}, fenceHandle("/vipd/a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.attach(uint32(ifindex)); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			f.close()
		}
	}()
	frames := fenceFrames(vip4, vip6)

	// through sends every frame and reports which ones arrived.
	through := func() map[string]bool {
		t.Helper()
		for _, fr := range frames {
			// A frame the filter drops on egress comes back to the sender
			// as ENOBUFS (NET_XMIT_DROP).
			if _, err := tx.WriteTo(fr.frame, &packet.Addr{HardwareAddr: net.HardwareAddr(fr.frame[:6])}); err != nil && !errors.Is(err, unix.ENOBUFS) {
				t.Fatalf("send %s: %v", fr.name, err)
			}
		}
		got := map[string]bool{}
		buf := make([]byte, 2048)
		rx.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, _, err := rx.ReadFrom(buf)
			if err != nil {
				return got
			}
			for _, fr := range frames {
				if bytes.Equal(buf[6:12], fr.frame[6:12]) && n >= len(fr.frame) && bytes.Equal(buf[:len(fr.frame)], fr.frame) {
					got[fr.name] = true
				}
			}
		}
	}
	check := func(when string, dropFenced bool) {
		t.Helper()
		got := through()
		for _, fr := range frames {
			if want := !(dropFenced && fr.fenced); got[fr.name] != want {
				t.Errorf("%s: %s arrived %v, want %v", when, fr.name, got[fr.name], want)
			}
		}
	}

	check("a fresh fence, deadline 0", true)

	// A fence left by a run that was killed (its deadline passed, nobody
	// moves it) is replaced, not run before ours.
	stale, err := loadFence(rt, []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)}, fenceHandle("/vipd/a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.attach(uint32(ifindex)); err != nil {
		t.Fatal(err)
	}
	// "Killed": its fds are gone, its filter stays.
	unix.Close(stale.progFD)
	unix.Close(stale.mapFD)
	f.ifindex = 0
	if err := f.attach(uint32(ifindex)); err != nil {
		t.Fatal(err)
	}
	if err := f.set(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("before the deadline", false)
	if err := f.set(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	check("50 ms after a deadline 50 ms ahead", true)
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	check("the fence removed", false)

	// Another group's filter on the same clsact (the IPv4 VIP only, its
	// deadline 0) is not ours to replace or remove.
	other, err := loadFence(rt, []netip.Prefix{netip.PrefixFrom(vip4, 32)}, fenceHandle("/vipd/b"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.close()
	if err := other.attach(uint32(ifindex)); err != nil {
		t.Fatal(err)
	}
	again, err := loadFence(rt, []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)}, fenceHandle("/vipd/a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := again.attach(uint32(ifindex)); err != nil {
		t.Fatal(err)
	}
	again.set(time.Now().Add(time.Hour))
	if err := again.close(); err != nil {
		t.Fatal(err)
	}
	got := through()
	for _, fr := range frames {
		if want := !(fr.fenced && (strings.HasPrefix(fr.name, "IPv4") || strings.HasPrefix(fr.name, "ARP"))); got[fr.name] != want {
			t.Errorf("another group's filter beside ours: %s arrived %v, want %v", fr.name, got[fr.name], want)
		}
	}

	// Someone else removes our filter: check says so once, and the fence
	// is no longer in force until it is attached again.
	if err := other.check(); err != nil || !other.inForce() {
		t.Fatalf("check with the filter in place: %v (in force %v)", err, other.inForce())
	}
	if err := removeFenceFilter(rt, uint32(ifindex), other.handle); err != nil {
		t.Fatal(err)
	}
	if err := other.check(); err == nil || other.inForce() {
		t.Fatalf("check after the filter was removed by someone else: %v (in force %v), want an error", err, other.inForce())
	}
	if err := other.attach(uint32(ifindex)); err != nil || !other.inForce() {
		t.Fatalf("attach again: %v", err)
	}

	// A vipd without the fence, after a run of its group killed while it
	// held the VIP: the copy goes first, then the filter.
	vipPrefix := netip.PrefixFrom(vip4, 32)
	if err := rt.setAddr(uint32(ifindex), vipPrefix, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	unix.Close(other.progFD) // "killed"
	unix.Close(other.mapFD)
	other.progFD, other.mapFD, other.ifindex = -1, -1, 0 // for its deferred close
	nf := noFence{rt: rt, handle: other.handle, vips: []netip.Prefix{vipPrefix}, log: &logger{w: io.Discard}}
	if err := nf.attach(uint32(ifindex)); err != nil {
		t.Fatal(err)
	}
	if there, err := filterPresent(rt, uint32(ifindex), other.handle); err != nil || there {
		t.Errorf("the filter a killed run left is still there (%v) after a vipd without the fence attached", err)
	}
	if left := vipsOn(rt, uint32(ifindex), []netip.Addr{vip4}); len(left) != 0 {
		t.Errorf("%v still on the link after the filter that kept it silent went", left)
	}
}

// needKernelFence skips, with one line, where this kernel refuses the
// fence (no BPF, no cls_bpf): vipd then runs by the TTL rule.
func needKernelFence(t *testing.T) {
	t.Helper()
	lab.NeedRoot(t)
	f, err := loadFence(nil, []netip.Prefix{netip.MustParsePrefix("192.0.2.200/32")}, 1)
	if err != nil {
		t.Skipf("this kernel refuses the kernel fence: %v", err)
	}
	f.close()
}

// fenceVeth is a veth between two namespaces the test creates: rtnetlink
// and a packet socket on the sending end, a packet socket on the other.
func fenceVeth(t *testing.T) (rt *rtnl, tx, rx *packet.Conn, ifindex int) {
	needKernelFence(t)
	a, b := lab.NewNS(t, "fence-a"), lab.NewNS(t, "fence-b")
	lab.Veth(t, a, "eth0", b, "eth0")
	rt, err := dialRTNL(a.Fd(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	listen := func(ns *lab.NS, c **packet.Conn, index *int) {
		if err := ns.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			*index = ifi.Index
			*c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { (*c).Close() })
	}
	var peer int
	listen(a, &tx, &ifindex)
	listen(b, &rx, &peer)
	return rt, tx, rx, ifindex
}

// TestKernelFenceStopsOnTime pins the kernel fact the fenced window rests
// on (docs/design.md, section 8a): with the deadline 300 ms ahead and
// frames sent every millisecond, the frames that speak for the VIP stop
// being seen from the other namespace within 50 ms of the deadline (a
// few ms here), the others never stop, and a deadline moved forward lets
// the VIP's frames through again.
func TestKernelFenceStopsOnTime(t *testing.T) {
	vip4 := netip.MustParseAddr("192.0.2.200")
	rt, tx, rx, ifindex := fenceVeth(t)
	f, err := loadFence(rt, []netip.Prefix{netip.PrefixFrom(vip4, 32)}, fenceHandle("/vipd/a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if err := f.attach(uint32(ifindex)); err != nil {
		t.Fatal(err)
	}
	var speak, other fenceFrame
	for _, fr := range fenceFrames(vip4, netip.MustParseAddr("2001:db8::100")) {
		switch fr.name {
		case "ARP announcement of the VIP":
			speak = fr
		case "IPv4 from another address":
			other = fr
		}
	}
	type seen struct{ last, first time.Time }
	// run sends both frames every millisecond for span and reports when
	// the other namespace saw the VIP's first and last, and how many of
	// the others it saw.
	run := func(span time.Duration) (vip seen, others int) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for end := time.Now().Add(span); time.Now().Before(end); time.Sleep(time.Millisecond) {
				for _, fr := range []fenceFrame{speak, other} {
					tx.WriteTo(fr.frame, &packet.Addr{HardwareAddr: net.HardwareAddr(fr.frame[:6])})
				}
			}
		}()
		buf := make([]byte, 2048)
		for {
			rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, _, err := rx.ReadFrom(buf)
			if err != nil {
				select {
				case <-done:
					return vip, others
				default:
					continue
				}
			}
			now := time.Now()
			switch {
			case n >= len(speak.frame) && bytes.Equal(buf[:len(speak.frame)], speak.frame):
				if vip.first.IsZero() {
					vip.first = now
				}
				vip.last = now
			case n >= len(other.frame) && bytes.Equal(buf[:len(other.frame)], other.frame):
				others++
			}
		}
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	if err := f.set(deadline); err != nil {
		t.Fatal(err)
	}
	vip, others := run(600 * time.Millisecond)
	if vip.last.IsZero() {
		t.Fatal("no frame of the VIP passed before the deadline")
	}
	if late := vip.last.Sub(deadline); late > 50*time.Millisecond || late < -50*time.Millisecond {
		t.Fatalf("the VIP's frames stopped %v from the deadline, want within 50ms", late)
	}
	if others < 300 {
		t.Fatalf("%d frames from another address seen in 600 ms, want them all (about 600)", others)
	}
	t.Logf("the VIP's last frame was seen %v from the deadline; %d frames from another address passed", vip.last.Sub(deadline).Round(100*time.Microsecond), others)
	if err := f.set(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if vip, _ = run(100 * time.Millisecond); vip.first.IsZero() {
		t.Fatal("a deadline moved forward did not let the VIP's frames through again")
	}
}

// TestFenceAssembles pins the program's shape: every jump lands inside
// it, and it ends in exits.
func TestFenceAssembles(t *testing.T) {
	prog, err := assembleFence([]netip.Prefix{netip.MustParsePrefix("192.0.2.100/32"), netip.MustParsePrefix("2001:db8::100/128")}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, in := range prog {
		if in.op&0x07 == 0x05 && in.op != bpfCall && in.op != bpfExit { // a jump
			if to := i + 1 + int(in.off); to < 0 || to >= len(prog) {
				t.Errorf("instruction %d jumps to %d, outside the program (%d)", i, to, len(prog))
			}
		}
	}
	if prog[len(prog)-1].op != bpfExit {
		t.Error("the program does not end in an exit")
	}
	b, _ := bpfInsn{op: bpfLdxW, dst: r2, src: r1, off: skbData}.MarshalBinary()
	if !bytes.Equal(b, []byte{0x61, 0x12, 76, 0, 0, 0, 0, 0}) {
		t.Errorf("ldxw r2, [r1+76] encodes as % x", b)
	}
}
