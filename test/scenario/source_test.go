package scenario

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"vipd/test/lab"
)

// TestHolderOwnSource: while n1 holds the dual-stack VIP, its new
// connections to the etcd host and to the client leave from n1's own
// addresses, as the far ends see them, and they still work after the VIP
// has moved to the other node.
func TestHolderOwnSource(t *testing.T) {
	l := lab.NewWith(t, lab.Options{Nodes: 2, DualStack: true, Args: []string{"vip.ttl=2"}})
	l.Lan.IP(t, "addr", "add", lab.Prefix6+"1/64", "dev", "br0", "nodad")
	startWhoAmI(t, l.Lan)
	startWhoAmI(t, l.Client)
	l.StartAll()
	h := l.Holder(lab.ElectBound, time.Second)
	lab.WaitFor(t, 5*time.Second, "the IPv6 VIP on "+h.Name, func() bool {
		held, _ := l.Mon6.Current()
		return len(held) == 1 && l.Nodes[held[0]] == h
	})
	own6 := fmt.Sprintf("%s%d", lab.Prefix6, 11+lab.IndexOf(l.Nodes, h))

	type far struct {
		what, addr, want string
		Conn             net.Conn
	}
	fars := []*far{
		{what: "etcd host", addr: lab.EtcdIP, want: h.IP},
		{what: "etcd host", addr: lab.Prefix6 + "1", want: own6},
		{what: "client", addr: lab.Client, want: h.IP},
		{what: "client", addr: lab.Prefix6 + "50", want: own6},
	}
	for _, f := range fars {
		err := h.NS.Do(func() (err error) {
			f.Conn, err = net.DialTimeout("tcp", net.JoinHostPort(f.addr, fmt.Sprint(whoAmIPort)), 3*time.Second)
			return err
		})
		if err != nil {
			t.Fatalf("%s connects to the %s at %s: %v", h.Name, f.what, f.addr, err)
		}
		t.Cleanup(func() { f.Conn.Close() })
		src, err := whoAmI(f.Conn)
		if err != nil {
			t.Fatalf("%s → %s %s: %v", h.Name, f.what, f.addr, err)
		}
		if src.String() != f.want {
			t.Errorf("%s's new connection to the %s at %s comes from %s, want its own %s", h.Name, f.what, f.addr, src, f.want)
		}
	}

	l.Signal(h, syscall.SIGTERM)
	next := l.HolderOtherThan(h, lab.MoveBound)
	lab.WaitFor(t, 5*time.Second, "the IPv6 VIP on "+next.Name, func() bool {
		held, _ := l.Mon6.Current()
		return len(held) == 1 && l.Nodes[held[0]] == next
	})
	// The far ends have heard the new holder's announcements: any entry
	// they keep for a VIP names the new holder. (They have one only if
	// something of theirs went to a VIP, as replies to connections from it
	// would.)
	for _, ns := range []struct {
		NS  *lab.NS
		dev string
	}{{l.Client, "eth0"}, {l.Lan, "br0"}} {
		for _, vip := range []string{lab.VIP, lab.VIP6} {
			lab.WaitFor(t, 5*time.Second, ns.NS.Name+"'s entry for "+vip+" to be gone or "+next.MAC, func() bool {
				mac := lab.NeighbourIn(t, ns.NS, ns.dev, vip)
				return mac == "" || mac == next.MAC
			})
		}
	}
	for _, f := range fars {
		src, err := whoAmI(f.Conn)
		if err != nil {
			t.Errorf("after the VIP moved to %s, %s's connection to the %s at %s broke: %v", next.Name, h.Name, f.what, f.addr, err)
		} else if src.String() != f.want {
			t.Errorf("after the move, the %s at %s sees %s's connection from %s, want %s", f.what, f.addr, h.Name, src, f.want)
		}
	}
	l.AssertNoOverlap()
}

// startWhoAmI answers each line on every TCP connection to whoAmIPort in ns
// (IPv4 and IPv6) with the connection's remote address, until the test ends.
func startWhoAmI(t *testing.T, ns *lab.NS) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", whoAmIPort))
		return err
	}); err != nil {
		t.Fatalf("who-am-i listener in %s: %v", ns.Name, err)
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

// whoAmIPort is where the lab's far ends (the etcd host, the client) tell
// each connection which source address they see it come from.
const whoAmIPort = 7778
