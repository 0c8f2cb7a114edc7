package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// The client's view: every node answers UDP probes on labEchoPort with its
// name; the prober in the client namespace asks the VIP every 10 ms and
// records who answered.

const (
	labEchoPort   = 7777
	probeInterval = 10 * time.Millisecond
)

// startResponders opens an echo socket in every node namespace. The sockets
// belong to the test process, so they answer whether or not vipd runs.
func (l *lab) startResponders() {
	for _, nd := range l.nodes {
		c, err := startEcho(nd)
		if err != nil {
			l.t.Fatal(err)
		}
		l.t.Cleanup(func() { c.Close() })
	}
}

// startEcho answers UDP probes on labEchoPort (IPv4 and IPv6) inside the
// node's namespace with the node's name, until the socket is closed.
func startEcho(nd *labNode) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := nd.ns.do(func() (err error) {
		c, err = net.ListenUDP("udp", &net.UDPAddr{Port: labEchoPort})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("echo responder in %s: %w", nd.name, err)
	}
	go func(name string) {
		buf := make([]byte, 64)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(append(buf[:n:n], name...), from)
		}
	}(nd.name)
	return c, nil
}

// answer is one probe that was answered.
type answer struct {
	sent time.Time
	node string
}

type prober struct {
	mu      sync.Mutex
	answers []answer // in the order of sending
	sent    map[uint64]time.Time
	stop    chan struct{}
	done    chan struct{}
}

// startProber sends a probe to the IPv4 VIP every probeInterval until the
// test ends.
func (l *lab) startProber() *prober {
	l.startResponders()
	return l.startProberTo(labVIP)
}

// startProberTo probes one address (the responders must be running).
// Replies may come from a node's own address: the socket is not connected,
// so it takes them from any source.
func (l *lab) startProberTo(addr string) *prober {
	var c *net.UDPConn
	err := l.client.do(func() (err error) {
		c, err = net.ListenUDP("udp", &net.UDPAddr{})
		return err
	})
	if err != nil {
		l.t.Fatalf("prober socket: %v", err)
	}
	p := &prober{sent: map[uint64]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	l.t.Cleanup(func() {
		close(p.stop)
		c.Close()
		<-p.done
	})
	vip := &net.UDPAddr{IP: net.ParseIP(addr), Port: labEchoPort}
	go func() {
		defer close(p.done)
		t := time.NewTicker(probeInterval)
		defer t.Stop()
		for seq := uint64(0); ; seq++ {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			p.mu.Lock()
			p.sent[seq] = time.Now()
			p.mu.Unlock()
			c.WriteToUDP(binary.BigEndian.AppendUint64(nil, seq), vip)
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if n < 8 {
				continue
			}
			seq := binary.BigEndian.Uint64(buf[:8])
			p.mu.Lock()
			if at, ok := p.sent[seq]; ok {
				delete(p.sent, seq) // count each probe once
				p.answers = append(p.answers, answer{sent: at, node: string(buf[8:n])})
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// lastAnswerFrom is the send time of the latest probe that node answered.
func (p *prober) lastAnswerFrom(node string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.answers) - 1; i >= 0; i-- {
		if p.answers[i].node == node {
			return p.answers[i].sent
		}
	}
	return time.Time{}
}

// waitAnsweredBy waits (bounded) until a probe sent after since is answered
// by node.
func (p *prober) waitAnsweredBy(t testing.TB, node string, since time.Time, timeout time.Duration) {
	t.Helper()
	if !p.answeredBy(node, since, timeout) {
		t.Fatalf("the client was not answered by %s within %v", node, timeout)
	}
}

// answeredBy waits (bounded) until a probe sent after since is answered by
// node, and says whether it was.
func (p *prober) answeredBy(node string, since time.Time, timeout time.Duration) bool {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if p.lastAnswerFrom(node).After(since) {
			return true
		}
	}
	return false
}

// outage is the longest stretch without answers around a fault at t0: from
// the last probe answered before t0 to the first answered by another node
// than old (or by anyone, if old is "").
func (p *prober) outage(t0 time.Time, old string) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var before, after time.Time
	for _, a := range p.answers {
		switch {
		case !a.sent.After(t0):
			before = a.sent
		case old != "" && a.node == old:
			before = a.sent // the old holder still answering after the fault
		default:
			after = a.sent
		}
		if !after.IsZero() {
			break
		}
	}
	if before.IsZero() || after.IsZero() {
		return 0, false
	}
	return after.Sub(before), true
}

// capture records the announcements of the VIP that the client namespace
// sees: gratuitous ARP for IPv4, unsolicited Neighbor Advertisements for
// IPv6.
type capture struct {
	mu     sync.Mutex
	frames []captured
	conn   *packet.Conn
}

type captured struct {
	at     time.Time
	sender string
}

func captureARP(b testing.TB, ns *testNS) *capture { return captureAnnouncements(b, ns, false) }
func captureNA(b testing.TB, ns *testNS) *capture  { return captureAnnouncements(b, ns, true) }

func captureAnnouncements(b testing.TB, ns *testNS, ipv6 bool) *capture {
	c := &capture{}
	err := ns.do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if ipv6 {
			c.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, &packet.Config{Filter: ndpFilter})
		} else {
			c.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
		}
		return err
	})
	if err != nil {
		b.Fatalf("capture announcements in %s: %v", ns.name, err)
	}
	b.Cleanup(func() { c.conn.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			at := time.Now()
			if sender := announcedBy(buf[:n], ipv6); sender != "" {
				c.mu.Lock()
				c.frames = append(c.frames, captured{at: at, sender: sender})
				c.mu.Unlock()
			}
		}
	}()
	return c
}

// announcedBy is the MAC that frame announces for the lab's VIP, or "".
func announcedBy(frame []byte, ipv6 bool) string {
	var f ethernetFrame
	if f.UnmarshalBinary(frame) != nil {
		return ""
	}
	if !ipv6 {
		var p arpPacket
		vip := netip.MustParseAddr(labVIP)
		if p.UnmarshalBinary(f.Payload) != nil || p.SenderIP != vip || p.TargetIP != vip {
			return ""
		}
		return p.SenderHardwareAddr.String()
	}
	var h ipv6Header
	var m ndpMessage
	if h.UnmarshalBinary(f.Payload) != nil || int(h.PayloadLength) > len(f.Payload)-ipv6HeaderLen ||
		m.UnmarshalBinary(f.Payload[ipv6HeaderLen:ipv6HeaderLen+int(h.PayloadLength)]) != nil {
		return ""
	}
	if m.Type != icmpv6NeighAdv || m.Target != netip.MustParseAddr(labVIP6) || m.Flags&naFlagOverride == 0 || h.Destination != ipv6AllNodes {
		return ""
	}
	return m.LinkLayerAddr.String()
}

// first is the first announcement from mac at or after t (zero if none).
func (c *capture) first(mac string, after time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.frames {
		if f.sender == mac && !f.at.Before(after) {
			return f.at
		}
	}
	return time.Time{}
}
