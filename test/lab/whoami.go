package lab

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// WhoAmIPort is where the lab's far ends (the etcd host, the client) tell
// each connection which source address they see it come from.
const WhoAmIPort = 7778

// StartWhoAmI answers each line on every TCP connection to WhoAmIPort in ns
// (IPv4 and IPv6) with the connection's remote address, until the test ends.
func StartWhoAmI(t testing.TB, ns *NS) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", WhoAmIPort))
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

// WhoAmI asks the far end over c which source address it sees.
func WhoAmI(c net.Conn) (netip.Addr, error) {
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
