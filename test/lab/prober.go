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
	ProbeInterval = 10 * time.Millisecond
)

// StartResponders opens an echo socket in every node namespace. The sockets
// belong to the test process, so they answer whether or not vipd runs.
func (l *Lab) StartResponders() {
	for _, nd := range l.Nodes {
		c, err := startEcho(nd)
		if err != nil {
			l.T.Fatal(err)
		}
		l.T.Cleanup(func() { c.Close() })
	}
}

// startEcho answers UDP probes on labEchoPort (IPv4 and IPv6) inside the
// node's namespace with the node's name, until it is closed. It answers
// from the address the probe was sent to, as a real service does (and
// not from the node's own address, which the kernel would pick for an
// unconnected socket): an answer from the VIP is a frame that speaks for
// it, so a node whose kernel fence has closed cannot answer.
func startEcho(nd *Node) (*echo, error) {
	e := &echo{}
	err := nd.NS.Do(func() (err error) {
		if e.c4, err = net.ListenUDP("udp4", &net.UDPAddr{Port: labEchoPort}); err != nil {
			return err
		}
		if e.c6, err = net.ListenUDP("udp6", &net.UDPAddr{Port: labEchoPort}); err != nil {
			e.c4.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("echo responder in %s: %w", nd.Name, err)
	}
	for _, c := range []*net.UDPConn{e.c4, e.c6} {
		if err := pktinfoOn(c); err != nil {
			e.Close()
			return nil, fmt.Errorf("echo responder in %s: %w", nd.Name, err)
		}
		go answerFromDst(c, nd.Name)
	}
	return e, nil
}

// echo is a node's two echo sockets.
type echo struct{ c4, c6 *net.UDPConn }

func (e *echo) Close() error {
	e.c4.Close()
	return e.c6.Close()
}

// pktinfoOn asks the kernel to say, with each datagram, the address it
// was sent to.
func pktinfoOn(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if c.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
	})
	if err == nil {
		err = serr
	}
	return err
}

// answerFromDst echoes each datagram with name appended, from the
// address it was sent to.
func answerFromDst(c *net.UDPConn, name string) {
	buf, oob := make([]byte, 64), make([]byte, 128)
	for {
		n, oobn, _, from, err := c.ReadMsgUDP(buf, oob)
		if err != nil {
			return
		}
		c.WriteMsgUDP(append(buf[:n:n], name...), replyFrom(oob[:oobn]), from)
	}
}

// replyFrom turns the destination a datagram came with into the control
// message that makes the answer leave from it.
func replyFrom(oob []byte) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			var in unix.Inet4Pktinfo
			copy(in.Addr[:], m.Data[8:12]) // struct in_pktinfo: ifindex, spec_dst, addr
			return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: in.Addr})
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			var in unix.Inet6Pktinfo
			copy(in.Addr[:], m.Data[:16]) // struct in6_pktinfo: addr, ifindex
			return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: in.Addr})
		}
	}
	return nil
}

// answer is one probe that was answered.
type answer struct {
	Sent time.Time
	Node string
}

type Prober struct {
	Mu      sync.Mutex
	Answers []answer // in the order of sending
	Sent    map[uint64]time.Time
	stop    chan struct{}
	Done    chan struct{}
}

// StartProber sends a probe to the IPv4 VIP every probeInterval until the
// test ends.
func (l *Lab) StartProber() *Prober {
	l.StartResponders()
	return l.StartProberTo(VIP)
}

// StartProberTo probes one address (the responders must be running).
// Replies may come from a node's own address: the socket is not connected,
// so it takes them from any source.
func (l *Lab) StartProberTo(addr string) *Prober {
	var c *net.UDPConn
	err := l.Client.Do(func() (err error) {
		c, err = net.ListenUDP("udp", &net.UDPAddr{})
		return err
	})
	if err != nil {
		l.T.Fatalf("prober socket: %v", err)
	}
	p := &Prober{Sent: map[uint64]time.Time{}, stop: make(chan struct{}), Done: make(chan struct{})}
	l.T.Cleanup(func() {
		close(p.stop)
		c.Close()
		<-p.Done
	})
	vip := &net.UDPAddr{IP: net.ParseIP(addr), Port: labEchoPort}
	go func() {
		defer close(p.Done)
		t := time.NewTicker(ProbeInterval)
		defer t.Stop()
		for seq := uint64(0); ; seq++ {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			p.Mu.Lock()
			p.Sent[seq] = time.Now()
			p.Mu.Unlock()
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
			p.Mu.Lock()
			if at, ok := p.Sent[seq]; ok {
				delete(p.Sent, seq) // count each probe once
				p.Answers = append(p.Answers, answer{Sent: at, Node: string(buf[8:n])})
			}
			p.Mu.Unlock()
		}
	}()
	return p
}

// LastAnswerFrom is the send time of the latest probe that node answered.
func (p *Prober) LastAnswerFrom(node string) time.Time {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	for i := len(p.Answers) - 1; i >= 0; i-- {
		if p.Answers[i].Node == node {
			return p.Answers[i].Sent
		}
	}
	return time.Time{}
}

// WaitAnsweredBy waits (bounded) until a probe sent after since is answered
// by node.
func (p *Prober) WaitAnsweredBy(t testing.TB, node string, since time.Time, timeout time.Duration) {
	t.Helper()
	if !p.AnsweredBy(node, since, timeout) {
		t.Fatalf("the client was not answered by %s within %v", node, timeout)
	}
}

// AnsweredBy waits (bounded) until a probe sent after since is answered by
// node, and says whether it was.
func (p *Prober) AnsweredBy(node string, since time.Time, timeout time.Duration) bool {
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if p.LastAnswerFrom(node).After(since) {
			return true
		}
	}
	return false
}

// Outage is the longest stretch without answers around a fault at t0: from
// the last probe answered before t0 to the first answered by another node
// than old (or by anyone, if old is "").
func (p *Prober) Outage(t0 time.Time, old string) (time.Duration, bool) {
	p.Mu.Lock()
	defer p.Mu.Unlock()
	var before, after time.Time
	for _, a := range p.Answers {
		switch {
		case !a.Sent.After(t0):
			before = a.Sent
		case old != "" && a.Node == old:
			before = a.Sent // the old holder still answering after the fault
		default:
			after = a.Sent
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

// Capture records the announcements of the VIP that the client namespace
// sees: gratuitous ARP for IPv4, unsolicited Neighbor Advertisements for
// IPv6.
type Capture struct {
	Mu     sync.Mutex
	Frames []Captured
	Conn   *packet.Conn
}

type Captured struct {
	At     time.Time
	Sender string
}

func CaptureARP(b testing.TB, ns *NS) *Capture { return captureAnnouncements(b, ns, false) }
func CaptureNA(b testing.TB, ns *NS) *Capture  { return captureAnnouncements(b, ns, true) }

func captureAnnouncements(b testing.TB, ns *NS, ipv6 bool) *Capture {
	c := &Capture{}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if ipv6 {
			c.Conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, nil)
		} else {
			c.Conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
		}
		return err
	})
	if err != nil {
		b.Fatalf("capture announcements in %s: %v", ns.Name, err)
	}
	b.Cleanup(func() { c.Conn.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := c.Conn.ReadFrom(buf)
			if err != nil {
				return
			}
			at := time.Now()
			if sender := announcedBy(buf[:n], ipv6); sender != "" {
				c.Mu.Lock()
				c.Frames = append(c.Frames, Captured{At: at, Sender: sender})
				c.Mu.Unlock()
			}
		}
	}()
	return c
}

// announcedBy is the MAC that frame announces for the lab's VIP, or "".
func announcedBy(frame []byte, ipv6 bool) string {
	if !ipv6 {
		p, err := ParseARP(frame)
		vip := netip.MustParseAddr(VIP)
		if err != nil || p.SenderIP != vip || p.TargetIP != vip {
			return ""
		}
		return p.SenderMAC.String()
	}
	na, err := ParseNA(frame)
	if err != nil || na.Target != netip.MustParseAddr(VIP6) || na.Flags&naOverride == 0 || na.Destination != allNodes {
		return ""
	}
	return na.TargetMAC.String()
}

// First is the first announcement from mac at or after t (zero if none).
func (c *Capture) First(mac string, after time.Time) time.Time {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	for _, f := range c.Frames {
		if f.Sender == mac && !f.At.Before(after) {
			return f.At
		}
	}
	return time.Time{}
}
