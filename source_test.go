package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The VIP must never become the holder's source address: the holder's own
// new connections (its etcd client, kubelet, the API server's etcd client)
// would leave from the VIP and break, their replies going to the next
// holder, when the VIP moves. setAddr adds the VIP deprecated
// (preferred_lft 0) for that. TestKernelDeprecatedVIP pins the kernel facts
// this rests on; TestHolderOwnSource checks it in the lab. The lifetime
// fence itself is pinned by TestKernelLifetimeWorstCase, which sets the VIP
// through setAddr too, so it runs on the deprecated address.

// sourceFor is the source address the kernel picks in ns for a new
// connection to dst: a connected UDP socket's local address, chosen by the
// same route lookup a TCP connect makes, without sending anything.
func sourceFor(t *testing.T, ns *testNS, dst netip.Addr) netip.Addr {
	t.Helper()
	var src netip.Addr
	err := ns.do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		src = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		return nil
	})
	if err != nil {
		t.Fatalf("connect to %s in %s: %v", dst, ns.name, err)
	}
	return src
}

// srcFamily is one address family's plan for TestKernelDeprecatedVIP.
type srcFamily struct {
	own, peer, vip netip.Prefix
	gateway        string
	dsts           []netip.Addr // on-link (the peer, another host), then off-link
}

// fullSrc is the source the kernel picks for dst when the VIP is added the
// old way (preferred_lft = valid_lft). IPv4 keeps the subnet's primary
// address, the node's own. IPv6 picks the VIP for on-link destinations (RFC
// 6724 rule 8, longest matching prefix, which Linux caps at each address's
// prefix length: /128 beats /64); for off-link ones the two tie, and the
// address added last wins, which is the VIP when vipd starts after the
// network is up.
func (f srcFamily) fullSrc(dst netip.Addr, vipFirst bool) netip.Addr {
	if f.vip.Addr().Is4() || (!f.own.Contains(dst) && vipFirst) {
		return f.own.Addr()
	}
	return f.vip.Addr()
}

var srcFamilies = map[string]srcFamily{
	"4": {
		own: netip.MustParsePrefix("192.0.2.11/24"), peer: netip.MustParsePrefix("192.0.2.1/24"),
		vip: netip.MustParsePrefix("192.0.2.100/32"), gateway: "192.0.2.1",
		dsts: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.150"),
			netip.MustParseAddr("198.51.100.5")},
	},
	"6": {
		own: netip.MustParsePrefix("2001:db8::11/64"), peer: netip.MustParsePrefix("2001:db8::1/64"),
		vip: netip.MustParsePrefix("2001:db8::100/128"), gateway: "2001:db8::1",
		dsts: []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::150"),
			netip.MustParseAddr("2001:db8:1::5")},
	},
}

// TestKernelDeprecatedVIP: on both families, whether the VIP was added
// before or after the node's own address, a VIP added by setAddr
// (deprecated) is never picked as the source for on-link or off-link
// destinations; a client still resolves it (the kernel answers vipd's own
// ARP probe and NS probe for it) and still connects to it. The same VIP
// added with preferred_lft = valid_lft is the source on IPv6: the reason
// for all this, and the proof that the check can fail.
func TestKernelDeprecatedVIP(t *testing.T) {
	for _, family := range []string{"4", "6"} {
		for _, vipFirst := range []bool{false, true} {
			order := "own-first"
			if vipFirst {
				order = "vip-first"
			}
			t.Run("IPv"+family+"/"+order, func(t *testing.T) {
				testDeprecatedVIP(t, family, srcFamilies[family], vipFirst)
			})
		}
	}
}

func testDeprecatedVIP(t *testing.T, family string, f srcFamily, vipFirst bool) {
	host, peer := newNS(t, "src"+family), newNS(t, "srcpeer"+family)
	veth(t, host, "eth0", peer, "eth0")
	r, err := dialRTNL(host.fd(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	rp, err := dialRTNL(peer.fd(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.Close() })
	index, pindex := linkIndex(t, r, "eth0"), linkIndex(t, rp, "eth0")

	setVIP := func() {
		t.Helper()
		if err := r.setAddr(index, f.vip, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if vipFirst {
		setVIP()
	}
	for _, a := range []struct {
		r     *rtnl
		index uint32
		p     netip.Prefix
	}{{r, index, f.own}, {rp, pindex, f.peer}} {
		if err := addPermanent(a.r, a.index, a.p); err != nil {
			t.Fatal(err)
		}
	}
	if !vipFirst {
		setVIP()
	}
	host.ip(t, "route", "add", "default", "via", f.gateway, "dev", "eth0")

	a, ok := findAddr(t, r, index, f.vip)
	if !ok || a.Preferred != 0 || !a.HasLifetimes || a.Valid == 0 {
		t.Fatalf("the VIP as setAddr left it: %+v (listed %v), want preferred_lft 0 and a valid_lft", a, ok)
	}
	for _, dst := range f.dsts {
		if src := sourceFor(t, host, dst); src != f.own.Addr() {
			t.Errorf("deprecated VIP: new connection to %s leaves from %s, want %s", dst, src, f.own.Addr())
		}
	}

	// The peer resolves the VIP: the host's kernel answers an ARP probe or
	// an NS from the unspecified address (vipd's own probe) for it.
	hostMAC := linkMAC(t, host, "eth0")
	an := openAnnouncerFor(t, peer, "eth0", family == "6")
	mac, err := an.probe(t.Context(), f.vip.Addr(), 2*time.Second)
	if err != nil || !bytes.Equal(mac, hostMAC) {
		t.Errorf("probe for the deprecated VIP from the peer: answered by %v (%v), want %v", mac, err, hostMAC)
	}

	// The peer connects to the VIP, and the host accepts on it.
	var ln net.Listener
	if err := host.do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(f.vip.Addr(), 7780).String())
		return err
	}); err != nil {
		t.Fatalf("listen on the deprecated VIP: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%s\n", c.RemoteAddr())
		c.Close()
	}()
	var seen string
	err = peer.do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(f.vip.Addr(), 7780).String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		seen, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		t.Errorf("connect to the deprecated VIP from the peer: %v", err)
	} else if got := netip.MustParseAddrPort(strings.TrimSpace(seen)).Addr().Unmap(); got != f.peer.Addr() {
		t.Errorf("the host saw the peer's connection from %s, want %s", got, f.peer.Addr())
	}

	// The old way, for contrast.
	full := vipMessage(index, f.vip)
	full.HasLifetimes, full.Preferred, full.Valid = true, 30, 30
	if err := replaceAddr(r, full); err != nil {
		t.Fatal(err)
	}
	for _, dst := range f.dsts {
		if src, want := sourceFor(t, host, dst), f.fullSrc(dst, vipFirst); src != want {
			t.Errorf("VIP with preferred_lft 30: new connection to %s leaves from %s; the kernel used to pick %s (a kernel fact changed: re-examine setAddr's comment)",
				dst, src, want)
		}
	}
}

// linkMAC is the hardware address of name in ns.
func linkMAC(t *testing.T, ns *testNS, name string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := ns.do(func() error {
		ifi, err := net.InterfaceByName(name)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// whoAmIPort is where the lab's far ends (the etcd host, the client) tell
// each connection which source address they see it come from.
const whoAmIPort = 7778

// startWhoAmI answers each line on every TCP connection to whoAmIPort in ns
// (IPv4 and IPv6) with the connection's remote address, until the test ends.
func startWhoAmI(t *testing.T, ns *testNS) {
	t.Helper()
	var ln net.Listener
	if err := ns.do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", whoAmIPort))
		return err
	}); err != nil {
		t.Fatalf("who-am-i listener in %s: %v", ns.name, err)
	}
	var conns []net.Conn // read after done: only the accept loop appends
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() {
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "%s\n", c.RemoteAddr()); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
}

// whoAmI asks the far end over c which source address it sees.
func whoAmI(c net.Conn) (netip.Addr, error) {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c, "who"); err != nil {
		return netip.Addr{}, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.Addr{}, err
	}
	ap, err := netip.ParseAddrPort(strings.TrimSpace(line))
	return ap.Addr().Unmap(), err
}

// TestHolderOwnSource: while n1 holds the dual-stack VIP, its new
// connections to the etcd host and to the client leave from n1's own
// addresses, as the far ends see them, and they still work after the VIP
// has moved to the other node.
func TestHolderOwnSource(t *testing.T) {
	l := newLabWith(t, labOptions{nodes: 2, dualStack: true, args: []string{"vip.ttl=2"}})
	l.lan.ip(t, "addr", "add", labPrefix6+"1/64", "dev", "br0", "nodad")
	startWhoAmI(t, l.lan)
	startWhoAmI(t, l.client)
	l.startAll()
	h := l.holder(electBound, time.Second)
	waitFor(t, 5*time.Second, "the IPv6 VIP on "+h.name, func() bool {
		held, _ := l.mon6.current()
		return len(held) == 1 && l.nodes[held[0]] == h
	})
	own6 := fmt.Sprintf("%s%d", labPrefix6, 11+indexOf(l.nodes, h))

	type far struct {
		what, addr, want string
		conn             net.Conn
	}
	fars := []*far{
		{what: "etcd host", addr: labEtcdIP, want: h.ip},
		{what: "etcd host", addr: labPrefix6 + "1", want: own6},
		{what: "client", addr: labClient, want: h.ip},
		{what: "client", addr: labPrefix6 + "50", want: own6},
	}
	for _, f := range fars {
		err := h.ns.do(func() (err error) {
			f.conn, err = net.DialTimeout("tcp", net.JoinHostPort(f.addr, fmt.Sprint(whoAmIPort)), 3*time.Second)
			return err
		})
		if err != nil {
			t.Fatalf("%s connects to the %s at %s: %v", h.name, f.what, f.addr, err)
		}
		t.Cleanup(func() { f.conn.Close() })
		src, err := whoAmI(f.conn)
		if err != nil {
			t.Fatalf("%s → %s %s: %v", h.name, f.what, f.addr, err)
		}
		if src.String() != f.want {
			t.Errorf("%s's new connection to the %s at %s comes from %s, want its own %s", h.name, f.what, f.addr, src, f.want)
		}
	}

	l.signal(h, syscall.SIGTERM)
	next := l.holderOtherThan(h, moveBound)
	waitFor(t, 5*time.Second, "the IPv6 VIP on "+next.name, func() bool {
		held, _ := l.mon6.current()
		return len(held) == 1 && l.nodes[held[0]] == next
	})
	// The far ends have heard the new holder's announcements: any entry
	// they keep for a VIP names the new holder. (They have one only if
	// something of theirs went to a VIP, as replies to connections from it
	// would.)
	for _, ns := range []struct {
		ns  *testNS
		dev string
	}{{l.client, "eth0"}, {l.lan, "br0"}} {
		for _, vip := range []string{labVIP, labVIP6} {
			waitFor(t, 5*time.Second, ns.ns.name+"'s entry for "+vip+" to be gone or "+next.mac, func() bool {
				mac := neighbourIn(t, ns.ns, ns.dev, vip)
				return mac == "" || mac == next.mac
			})
		}
	}
	for _, f := range fars {
		src, err := whoAmI(f.conn)
		if err != nil {
			t.Errorf("after the VIP moved to %s, %s's connection to the %s at %s broke: %v", next.name, h.name, f.what, f.addr, err)
		} else if src.String() != f.want {
			t.Errorf("after the move, the %s at %s sees %s's connection from %s, want %s", f.what, f.addr, h.name, src, f.want)
		}
	}
	l.assertNoOverlap()
}
