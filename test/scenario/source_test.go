package scenario

import (
	"fmt"
	"net"
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
	lab.StartWhoAmI(t, l.Lan)
	lab.StartWhoAmI(t, l.Client)
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
			f.Conn, err = net.DialTimeout("tcp", net.JoinHostPort(f.addr, fmt.Sprint(lab.WhoAmIPort)), 3*time.Second)
			return err
		})
		if err != nil {
			t.Fatalf("%s connects to the %s at %s: %v", h.Name, f.what, f.addr, err)
		}
		t.Cleanup(func() { f.Conn.Close() })
		src, err := lab.WhoAmI(f.Conn)
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
		src, err := lab.WhoAmI(f.Conn)
		if err != nil {
			t.Errorf("after the VIP moved to %s, %s's connection to the %s at %s broke: %v", next.Name, h.Name, f.what, f.addr, err)
		} else if src.String() != f.want {
			t.Errorf("after the move, the %s at %s sees %s's connection from %s, want %s", f.what, f.addr, h.Name, src, f.want)
		}
	}
	l.AssertNoOverlap()
}
