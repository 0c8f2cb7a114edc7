package main

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"vipd/test/lab"
)

func littleEndianOnly(t *testing.T) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the expected bytes below are written for a little-endian host")
	}
}

// The layouts below follow struct ifaddrmsg / ifinfomsg, struct rtattr
// (4-byte length+type header, payload padded to 4) and struct ifa_cacheinfo
// from the kernel's uapi headers.
func TestAddrMessageBytes(t *testing.T) {
	littleEndianOnly(t)
	tests := []struct {
		name string
		msg  *addrMessage
		want []byte
	}{{
		name: "IPv4 VIP with lifetimes",
		msg: func() *addrMessage {
			m := vipMessage(7, netip.MustParsePrefix("192.0.2.100/32"))
			m.HasLifetimes, m.Preferred, m.Valid = true, 2, 3
			return m
		}(),
		want: []byte{
			unix.AF_INET, 32, 0, 0, // family, prefixlen, flags, scope
			7, 0, 0, 0, // ifindex
			8, 0, unix.IFA_LOCAL, 0, 192, 0, 2, 100,
			8, 0, unix.IFA_ADDRESS, 0, 192, 0, 2, 100,
			20, 0, unix.IFA_CACHEINFO, 0,
			2, 0, 0, 0, // ifa_prefered
			3, 0, 0, 0, // ifa_valid
			0, 0, 0, 0, // cstamp
			0, 0, 0, 0, // tstamp
		},
	}, {
		name: "IPv4 delete request has no lifetimes",
		msg:  vipMessage(1, netip.MustParsePrefix("198.51.100.7/24")),
		want: []byte{
			unix.AF_INET, 24, 0, 0, 1, 0, 0, 0,
			8, 0, unix.IFA_LOCAL, 0, 198, 51, 100, 7,
			8, 0, unix.IFA_ADDRESS, 0, 198, 51, 100, 7,
		},
	}, {
		name: "IPv6 VIP without DAD",
		msg:  vipMessage(3, netip.MustParsePrefix("2001:db8::1/128")),
		want: []byte{
			unix.AF_INET6, 128, 0, 0, 3, 0, 0, 0,
			20, 0, unix.IFA_ADDRESS, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
			8, 0, unix.IFA_FLAGS, 0, unix.IFA_F_NODAD, 0, 0, 0,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.msg.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("MarshalBinary:\n got % x\nwant % x", got, tt.want)
			}
			var back addrMessage
			if err := back.UnmarshalBinary(got); err != nil {
				t.Fatal(err)
			}
			if back.prefix() != netip.PrefixFrom(tt.msg.ip(), int(tt.msg.PrefixLen)) || back.Index != tt.msg.Index ||
				back.HasLifetimes != tt.msg.HasLifetimes || back.Valid != tt.msg.Valid ||
				back.Preferred != tt.msg.Preferred || back.ExtFlags != tt.msg.ExtFlags {
				t.Fatalf("round trip: got %+v, want %+v", back, *tt.msg)
			}
		})
	}
}

func TestAddrMessageRejectsShort(t *testing.T) {
	var m addrMessage
	if err := m.UnmarshalBinary([]byte{2, 32, 0}); err == nil {
		t.Fatal("3-byte ifaddrmsg accepted")
	}
	// A truncated attribute (length says 8, 6 bytes present).
	if err := m.UnmarshalBinary([]byte{2, 32, 0, 0, 1, 0, 0, 0, 8, 0, 2, 0, 192, 0}); err == nil {
		t.Fatal("truncated attribute accepted")
	}
	// IFA_CACHEINFO shorter than struct ifa_cacheinfo.
	if err := m.UnmarshalBinary([]byte{2, 32, 0, 0, 1, 0, 0, 0, 8, 0, unix.IFA_CACHEINFO, 0, 1, 0, 0, 0}); err == nil {
		t.Fatal("short IFA_CACHEINFO accepted")
	}
}

func TestLinkMessageBytes(t *testing.T) {
	littleEndianOnly(t)
	in := []byte{
		unix.AF_UNSPEC, 0, 1, 0, // family, pad, type ARPHRD_ETHER
		5, 0, 0, 0, // ifindex
		0x43, 0x10, 1, 0, // flags: UP|BROADCAST|RUNNING|MULTICAST|LOWER_UP
		0, 0, 0, 0, // change
		9, 0, unix.IFLA_IFNAME, 0, 'e', 't', 'h', '0', 0, 0, 0, 0,
		10, 0, unix.IFLA_ADDRESS, 0, 0x02, 0, 0, 0, 0, 0x01, 0, 0,
		5, 0, unix.IFLA_OPERSTATE, 0, 6, 0, 0, 0,
	}
	var l linkMessage
	if err := l.UnmarshalBinary(in); err != nil {
		t.Fatal(err)
	}
	want := linkMessage{Type: 1, Index: 5, Flags: 0x11043, Name: "eth0", HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	if l.Type != want.Type || l.Index != want.Index || l.Flags != want.Flags || l.Name != want.Name ||
		l.HardwareAddr.String() != want.HardwareAddr.String() {
		t.Fatalf("got %+v, want %+v", l, want)
	}
	if !l.up() {
		t.Fatal("UP|RUNNING link reported down")
	}
	l.Flags &^= unix.IFF_RUNNING
	if l.up() {
		t.Fatal("link without carrier reported up")
	}

	req, err := (&linkMessage{Family: unix.AF_UNSPEC, Name: "eth0"}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	wantReq := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, unix.IFLA_IFNAME, 0, 'e', 't', 'h', '0', 0, 0, 0, 0}
	if !bytes.Equal(req, wantReq) {
		t.Fatalf("request:\n got % x\nwant % x", req, wantReq)
	}
}

func TestFindLink(t *testing.T) {
	links := []linkMessage{{Index: 1, Name: "lo"}, {Index: 2, Name: "eth0"}, {Index: 3, Name: "eth1"}}
	addr := func(index uint32, p string) addrMessage {
		return *vipMessage(index, netip.MustParsePrefix(p))
	}
	addrs := []addrMessage{
		addr(1, "127.0.0.1/8"),
		addr(2, "198.51.100.10/24"),
		addr(3, "192.0.2.100/32"), // a stale VIP copy must not decide
		addr(3, "192.0.2.10/24"),
	}
	vip := netip.MustParseAddr("192.0.2.100")
	if l, ok := findLink(links, addrs, "auto", vip); !ok || l.Name != "eth1" {
		t.Fatalf("auto: got %q %v, want eth1", l.Name, ok)
	}
	v6 := append(addrs, addr(2, "2001:db8:1::10/64"), addr(2, "fe80::1/64"))
	if l, ok := findLink(links, v6, "auto", netip.MustParseAddr("2001:db8:1::100")); !ok || l.Name != "eth0" {
		t.Fatalf("auto for IPv6: got %q %v, want eth0", l.Name, ok)
	}
	if _, ok := findLink(links, addrs, "auto", netip.MustParseAddr("203.0.113.1")); ok {
		t.Fatal("auto matched an address in no local subnet")
	}
	if l, ok := findLink(links, addrs, "eth0", vip); !ok || l.Index != 2 {
		t.Fatalf("by name: got %+v %v", l, ok)
	}
	if _, ok := findLink(links, addrs, "eth9", vip); ok {
		t.Fatal("found a link that does not exist")
	}
}

// vethNS makes a namespace with one veth end named eth0 (its peer in a
// second namespace) and returns the namespace and eth0's index.
func vethNS(t *testing.T) (*lab.NS, *rtnl, linkMessage) {
	ns, peer := lab.NewNS(t, "rt"), lab.NewNS(t, "rtpeer")
	lab.Veth(t, ns, "eth0", peer, "eth0")
	r, err := dialRTNL(ns.Fd(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	links, err := r.links()
	if err != nil {
		t.Fatal(err)
	}
	l, ok := findLink(links, nil, "eth0", netip.Addr{})
	if !ok {
		t.Fatalf("eth0 not listed: %+v", links)
	}
	return ns, r, l
}

func findAddr(t *testing.T, r *rtnl, index uint32, p netip.Prefix) (addrMessage, bool) {
	t.Helper()
	addrs, err := r.addrs(unix.AF_UNSPEC)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.Index == index && a.prefix() == p {
			return a, true
		}
	}
	return addrMessage{}, false
}

func TestAddrLifecycle(t *testing.T) {
	lab.NeedRoot(t)
	ns, r, l := vethNS(t)
	ns.IP(t, "addr", "add", "192.0.2.10/24", "dev", "eth0")
	other := netip.MustParsePrefix("192.0.2.10/24")
	vip := netip.MustParsePrefix("192.0.2.100/32")

	w, err := watchRTNL(ns.Fd(t))
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan rtnlEvent, 64)
	go w.run(events)
	t.Cleanup(func() { w.Close() })

	if err := r.setAddr(l.Index, vip, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	a, ok := findAddr(t, r, l.Index, vip)
	if !ok || !a.HasLifetimes || a.Valid > 30 || a.Valid < 29 || a.Preferred != 0 || a.ExtFlags&unix.IFA_F_DEPRECATED == 0 {
		t.Fatalf("after add: %+v present=%v, want valid_lft 29..30, preferred_lft 0, deprecated", a, ok)
	}
	waitAddrEvent(t, events, vip, false)

	// Replace shortens the lifetime of the same address; no second copy.
	if err := r.setAddr(l.Index, vip, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	a, _ = findAddr(t, r, l.Index, vip)
	if a.Valid > 5 || a.Preferred != 0 || a.ExtFlags&unix.IFA_F_DEPRECATED == 0 {
		t.Fatalf("after replace: valid_lft %d preferred_lft %d flags %#x, want ≤ 5, 0, deprecated", a.Valid, a.Preferred, a.ExtFlags)
	}
	if err := r.setAddr(l.Index, vip, 500*time.Millisecond); err == nil {
		t.Fatal("a lifetime below one second was accepted")
	}

	removed, err := r.delAddr(l.Index, vip)
	if err != nil || !removed {
		t.Fatalf("delete: removed=%v err=%v", removed, err)
	}
	if _, ok := findAddr(t, r, l.Index, vip); ok {
		t.Fatal("address still there after delete")
	}
	removed, err = r.delAddr(l.Index, vip)
	if err != nil || removed {
		t.Fatalf("second delete: removed=%v err=%v, want false, nil", removed, err)
	}
	if _, ok := findAddr(t, r, l.Index, other); !ok {
		t.Fatal("the interface's own address was touched")
	}

	// The kernel removes the address by itself when its lifetime ends.
	if err := r.setAddr(l.Index, vip, time.Second); err != nil {
		t.Fatal(err)
	}
	// Events arrive in order: the explicit delete above, this add, and only
	// then the kernel's removal at expiry.
	waitAddrEvent(t, events, vip, true)
	waitAddrEvent(t, events, vip, false)
	waitAddrEvent(t, events, vip, true)
	if _, ok := findAddr(t, r, l.Index, vip); ok {
		t.Fatal("address still listed after the kernel reported its removal")
	}
	if _, ok := findAddr(t, r, l.Index, other); !ok {
		t.Fatal("the interface's own address went with the VIP")
	}
}

// waitAddrEvent waits (bounded) for the kernel to report p added or deleted.
func waitAddrEvent(t *testing.T, events chan rtnlEvent, p netip.Prefix, deleted bool) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.err != nil {
				t.Fatal(ev.err)
			}
			if ev.addr != nil && ev.addr.prefix() == p && ev.deleted == deleted {
				return
			}
		case <-timeout:
			t.Fatalf("no event for %s (deleted=%v) within 5 s", p, deleted)
		}
	}
}

func TestLinkEvents(t *testing.T) {
	lab.NeedRoot(t)
	ns, _, l := vethNS(t)
	w, err := watchRTNL(ns.Fd(t))
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan rtnlEvent, 64)
	go w.run(events)
	t.Cleanup(func() { w.Close() })

	ns.IP(t, "link", "set", "eth0", "down")
	waitLink(t, events, l.Index, false)
	ns.IP(t, "link", "set", "eth0", "up")
	waitLink(t, events, l.Index, true)
}

func waitLink(t *testing.T, events chan rtnlEvent, index uint32, up bool) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.link != nil && ev.link.Index == index && ev.link.up() == up {
				return
			}
		case <-timeout:
			t.Fatalf("link %d never reported up=%v", index, up)
		}
	}
}
