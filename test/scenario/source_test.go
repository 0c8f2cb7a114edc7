package scenario

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

// whoAmIPort is where the lab's far ends (the etcd host, the client) tell
// each connection which source address they see it come from.
const whoAmIPort = 7778
