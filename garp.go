package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ARP over Ethernet and IPv4, RFC 826.
const (
	arpHTypeEthernet = 1      // ar_hrd: Ethernet (10Mb)
	arpPTypeIPv4     = 0x0800 // ar_pro: IPv4
	arpHLenEthernet  = 6      // ar_hln
	arpPLenIPv4      = 4      // ar_pln

	arpOpRequest = 1
	arpOpReply   = 2

	// arpPacketLen is the size of an Ethernet/IPv4 ARP packet.
	arpPacketLen = 8 + 2*arpHLenEthernet + 2*arpPLenIPv4 // 28

	etherTypeARP = 0x0806

	ethHeaderLen = 14
	// ethMinFrameLen is the minimum Ethernet frame length without the FCS.
	ethMinFrameLen = 60
)

var (
	ethBroadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ethZero      = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	ipv4Zero     = netip.AddrFrom4([4]byte{})
)

// arpPacket is an Ethernet/IPv4 ARP packet (RFC 826), 28 bytes.
type arpPacket struct {
	Operation          uint16 // 1 request, 2 reply
	SenderHardwareAddr net.HardwareAddr
	SenderIP           netip.Addr
	TargetHardwareAddr net.HardwareAddr
	TargetIP           netip.Addr
}

// MarshalBinary encodes p in the RFC 826 layout. Both hardware addresses must
// be 6 bytes and both IP addresses IPv4 (not IPv4-mapped IPv6).
func (p *arpPacket) MarshalBinary() ([]byte, error) {
	if len(p.SenderHardwareAddr) != arpHLenEthernet {
		return nil, fmt.Errorf("arp: sender hardware address %q is not 6 bytes", p.SenderHardwareAddr)
	}
	if len(p.TargetHardwareAddr) != arpHLenEthernet {
		return nil, fmt.Errorf("arp: target hardware address %q is not 6 bytes", p.TargetHardwareAddr)
	}
	if !p.SenderIP.Is4() {
		return nil, fmt.Errorf("arp: sender IP %s is not IPv4", p.SenderIP)
	}
	if !p.TargetIP.Is4() {
		return nil, fmt.Errorf("arp: target IP %s is not IPv4", p.TargetIP)
	}
	b := make([]byte, arpPacketLen)
	binary.BigEndian.PutUint16(b[0:2], arpHTypeEthernet)
	binary.BigEndian.PutUint16(b[2:4], arpPTypeIPv4)
	b[4] = arpHLenEthernet
	b[5] = arpPLenIPv4
	binary.BigEndian.PutUint16(b[6:8], p.Operation)
	copy(b[8:14], p.SenderHardwareAddr)
	sip := p.SenderIP.As4()
	copy(b[14:18], sip[:])
	copy(b[18:24], p.TargetHardwareAddr)
	tip := p.TargetIP.As4()
	copy(b[24:28], tip[:])
	return b, nil
}

// UnmarshalBinary decodes an Ethernet/IPv4 ARP packet. Bytes after the 28th
// (Ethernet padding) are ignored. The hardware addresses are copies, not
// slices of b.
func (p *arpPacket) UnmarshalBinary(b []byte) error {
	if len(b) < arpPacketLen {
		return fmt.Errorf("arp: packet is %d bytes, want at least %d", len(b), arpPacketLen)
	}
	if ht := binary.BigEndian.Uint16(b[0:2]); ht != arpHTypeEthernet {
		return fmt.Errorf("arp: hardware type %d is not Ethernet", ht)
	}
	if pt := binary.BigEndian.Uint16(b[2:4]); pt != arpPTypeIPv4 {
		return fmt.Errorf("arp: protocol type %#04x is not IPv4", pt)
	}
	if b[4] != arpHLenEthernet {
		return fmt.Errorf("arp: hardware address length %d, want %d", b[4], arpHLenEthernet)
	}
	if b[5] != arpPLenIPv4 {
		return fmt.Errorf("arp: protocol address length %d, want %d", b[5], arpPLenIPv4)
	}
	p.Operation = binary.BigEndian.Uint16(b[6:8])
	p.SenderHardwareAddr = bytes.Clone(b[8:14])
	p.SenderIP = netip.AddrFrom4([4]byte(b[14:18]))
	p.TargetHardwareAddr = bytes.Clone(b[18:24])
	p.TargetIP = netip.AddrFrom4([4]byte(b[24:28]))
	return nil
}

// ethernetFrame is an Ethernet II frame header plus payload (no FCS).
type ethernetFrame struct {
	Destination, Source net.HardwareAddr
	EtherType           uint16
	Payload             []byte
}

// MarshalBinary encodes f, padding it with zeros to the 60-byte minimum.
func (f *ethernetFrame) MarshalBinary() ([]byte, error) {
	if len(f.Destination) != 6 {
		return nil, fmt.Errorf("ethernet: destination address %q is not 6 bytes", f.Destination)
	}
	if len(f.Source) != 6 {
		return nil, fmt.Errorf("ethernet: source address %q is not 6 bytes", f.Source)
	}
	b := make([]byte, max(ethHeaderLen+len(f.Payload), ethMinFrameLen))
	copy(b[0:6], f.Destination)
	copy(b[6:12], f.Source)
	binary.BigEndian.PutUint16(b[12:14], f.EtherType)
	copy(b[ethHeaderLen:], f.Payload)
	return b, nil
}

// UnmarshalBinary decodes an Ethernet II frame. The payload keeps any padding;
// all fields are copies, not slices of b.
func (f *ethernetFrame) UnmarshalBinary(b []byte) error {
	if len(b) < ethHeaderLen {
		return fmt.Errorf("ethernet: frame is %d bytes, want at least %d", len(b), ethHeaderLen)
	}
	f.Destination = bytes.Clone(b[0:6])
	f.Source = bytes.Clone(b[6:12])
	f.EtherType = binary.BigEndian.Uint16(b[12:14])
	f.Payload = bytes.Clone(b[ethHeaderLen:])
	return nil
}

// arpFrame builds a broadcast Ethernet frame carrying p, sent from p's sender
// hardware address.
func arpFrame(p *arpPacket) ([]byte, error) {
	payload, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	f := ethernetFrame{
		Destination: ethBroadcast,
		Source:      p.SenderHardwareAddr,
		EtherType:   etherTypeARP,
		Payload:     payload,
	}
	return f.MarshalBinary()
}

// gratuitousARP returns the two announcement frames for ip owned by mac, both broadcast:
// the request form (op 1, sender=target=ip, target MAC zero) and the reply form
// (op 2, sender=target=ip, target MAC = sender MAC). Linux (arp_is_garp) treats a
// reply as gratuitous only when its target MAC is the sender's; one with a
// broadcast target MAC is ignored by a neighbour updated in the last second.
func gratuitousARP(mac net.HardwareAddr, ip netip.Addr) ([][]byte, error) {
	req, err := arpFrame(&arpPacket{
		Operation:          arpOpRequest,
		SenderHardwareAddr: mac,
		SenderIP:           ip,
		TargetHardwareAddr: ethZero,
		TargetIP:           ip,
	})
	if err != nil {
		return nil, err
	}
	rep, err := arpFrame(&arpPacket{
		Operation:          arpOpReply,
		SenderHardwareAddr: mac,
		SenderIP:           ip,
		TargetHardwareAddr: mac,
		TargetIP:           ip,
	})
	if err != nil {
		return nil, err
	}
	return [][]byte{req, rep}, nil
}

// arpProbe returns an RFC 5227 probe frame: request, sender IP 0.0.0.0, sender MAC mac,
// target MAC zero, target IP ip, broadcast.
func arpProbe(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if !ip.Is4() {
		// Checked here because the sender IP is 0.0.0.0, so an IPv6 ip
		// would otherwise be reported as the target only.
		return nil, fmt.Errorf("arp: probe target %s is not IPv4", ip)
	}
	return arpFrame(&arpPacket{
		Operation:          arpOpRequest,
		SenderHardwareAddr: mac,
		SenderIP:           ipv4Zero,
		TargetHardwareAddr: ethZero,
		TargetIP:           ip,
	})
}

// announcer sends and receives ARP frames on one interface through an AF_PACKET socket.
//
// The socket is bound to ETH_P_ARP, so it receives every ARP frame that
// arrives on the link (but not what this host sends: outgoing frames only go
// to ETH_P_ALL sockets); probe discards what queued up before it. No BPF
// filter is attached; probe filters in Go. announce and probe may run
// concurrently with each other, but probe must not run concurrently with
// itself. When the interface's MAC changes, close the announcer and open a
// new one with the new MAC.
type announcer struct {
	name  string // interface name, for errors
	mac   net.HardwareAddr
	conn  *packet.Conn // ARP
	conn6 *packet.Conn // ICMPv6 neighbour discovery (ndp.go); nil without IPv6 VIPs
}

// announceWriteTimeout bounds one send, so a stuck transmit queue cannot wedge
// the caller (e.g. an announcement burst that must stop on step-down).
const announceWriteTimeout = time.Second

// ndpFilter lets only ICMPv6 neighbour solicitations and advertisements
// (without extension headers) reach the IPv6 socket, which would otherwise
// be handed a copy of every IPv6 packet on the link.
var ndpFilter = mustAssemble([]bpf.Instruction{
	bpf.LoadAbsolute{Off: 12, Size: 2}, // EtherType
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherTypeIPv6, SkipTrue: 5},
	bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 1}, // next header
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protoICMPv6, SkipTrue: 3},
	bpf.LoadAbsolute{Off: ethHeaderLen + ipv6HeaderLen, Size: 1}, // ICMPv6 type
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmpv6NeighSol, SkipTrue: 2},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmpv6NeighAdv, SkipTrue: 1},
	bpf.RetConstant{Val: 0},
	bpf.RetConstant{Val: 0x40000},
})

func mustAssemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err)
	}
	return raw
}

// openAnnouncer opens the AF_PACKET sockets on the interface: one for ARP
// (packet.Raw, ETH_P_ARP) and, when ipv6 is set, one for neighbour
// discovery.
func openAnnouncer(ifindex int, name string, mac net.HardwareAddr, ipv6 bool) (*announcer, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("open ARP socket on %s: hardware address %q is not 6 bytes", name, mac)
	}
	if ifindex <= 0 {
		return nil, fmt.Errorf("open ARP socket on %s: invalid interface index %d", name, ifindex)
	}
	ifi := &net.Interface{Index: ifindex, Name: name, HardwareAddr: mac}
	conn, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
	if err != nil {
		return nil, fmt.Errorf("open ARP socket on %s: %w", name, err)
	}
	a := &announcer{name: name, mac: bytes.Clone(mac), conn: conn}
	if ipv6 {
		a.conn6, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, &packet.Config{Filter: ndpFilter})
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("open neighbour discovery socket on %s: %w", name, err)
		}
	}
	return a, nil
}

// Close closes the sockets.
func (a *announcer) Close() error {
	if a.conn6 != nil {
		a.conn6.Close()
	}
	if err := a.conn.Close(); err != nil {
		return fmt.Errorf("close ARP socket on %s: %w", a.name, err)
	}
	return nil
}

// socket is the connection that carries ip's family.
func (a *announcer) socket(ip netip.Addr) (*packet.Conn, error) {
	if ip.Is4() {
		return a.conn, nil
	}
	if a.conn6 == nil {
		return nil, errors.New("no IPv6 socket: the announcer was opened for IPv4 only")
	}
	return a.conn6, nil
}

// send writes one complete Ethernet frame (its header names the
// destination).
func (a *announcer) send(conn *packet.Conn, frame []byte) error {
	if err := conn.SetWriteDeadline(time.Now().Add(announceWriteTimeout)); err != nil {
		return err
	}
	_, err := conn.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr(frame[0:6])})
	return err
}

// announce sends the announcement for ip once: both gratuitous ARP forms
// for IPv4, an unsolicited Neighbor Advertisement for IPv6.
func (a *announcer) announce(ip netip.Addr) error {
	what := "gratuitous ARP"
	frames, err := gratuitousARP(a.mac, ip)
	if ip.Is6() {
		what = "unsolicited neighbour advertisement"
		var na []byte
		na, err = unsolicitedNA(a.mac, ip)
		frames = [][]byte{na}
	}
	conn, serr := a.socket(ip)
	if err == nil {
		err = serr
	}
	for _, f := range frames {
		if err != nil {
			break
		}
		err = a.send(conn, f)
	}
	if err != nil {
		return fmt.Errorf("send %s for %s on %s: %w", what, ip, a.name, err)
	}
	return nil
}

// drain discards every frame already queued on the socket, without blocking.
func (a *announcer) drain(conn *packet.Conn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	err = rc.Control(func(fd uintptr) {
		buf := make([]byte, 64) // frames are truncated; only their removal matters
		// Bounded so that an ARP flood cannot keep us here forever.
		for range 100000 {
			_, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				return
			}
			if err != nil {
				rerr = os.NewSyscallError("recvfrom", err)
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

// probe sends an ARP probe for ip and listens for window; it returns the MAC of any other host
// (not a.mac) that claims ip during the window (an ARP reply or request whose sender IP is ip, or
// a probe from another MAC for the same target ip, which means a simultaneous claimant), or nil.
// Frames that are not for ip are ignored. It honours ctx cancellation.
//
// It returns as soon as a claimant is seen. Frames that were queued before
// the probe was sent are discarded. A window <= 0 means probing is disabled:
// nothing is sent and the result is nil.
func (a *announcer) probe(ctx context.Context, ip netip.Addr, window time.Duration) (net.HardwareAddr, error) {
	if window <= 0 {
		return nil, nil
	}
	return a.listen(ctx, ip, window, true)
}

// watch listens for window, sending nothing, for another host that claims
// ip as probe would see it: a bootstrap holder (bootstrap.go) lets go at
// the first sign of an elected one.
func (a *announcer) watch(ctx context.Context, ip netip.Addr, window time.Duration) (net.HardwareAddr, error) {
	return a.listen(ctx, ip, window, false)
}

// listen is probe's and watch's: with send, the queued frames are dropped
// and the probe goes out first.
func (a *announcer) listen(ctx context.Context, ip netip.Addr, window time.Duration, send bool) (net.HardwareAddr, error) {
	what, claimant, frame, err := "ARP probe", a.claimant, []byte(nil), error(nil)
	if ip.Is4() {
		frame, err = arpProbe(a.mac, ip)
	} else {
		what = "neighbour solicitation probe"
		claimant = func(f []byte, ip netip.Addr) net.HardwareAddr { return ndpClaimant(f, ip, a.mac) }
		frame, err = ndpProbe(a.mac, ip)
	}
	if !send {
		what = "watch for claims"
	}
	wrap := func(err error) error {
		return fmt.Errorf("%s for %s on %s: %w", what, ip, a.name, err)
	}
	if err != nil {
		return nil, wrap(err)
	}
	conn, err := a.socket(ip)
	if err != nil {
		return nil, wrap(err)
	}
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	if send {
		if err := a.drain(conn); err != nil {
			return nil, wrap(err)
		}
		if err := a.send(conn, frame); err != nil {
			return nil, wrap(err)
		}
	}
	if err := conn.SetReadDeadline(time.Now().Add(window)); err != nil {
		return nil, wrap(err)
	}
	// Cancellation interrupts a blocked read by moving the deadline into
	// the past. Wait for that to finish before returning, so it cannot land
	// on a later probe's deadline.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = conn.SetReadDeadline(time.Unix(1, 0))
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()

	buf := make([]byte, 1600)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return nil, wrap(cerr)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, nil
			}
			return nil, wrap(err)
		}
		if mac := claimant(buf[:n], ip); mac != nil {
			return mac, nil
		}
	}
}

// claimant returns the sender MAC of frame if it is an ARP frame from another
// host that claims ip: any request or reply with sender IP ip, or an RFC 5227
// probe (sender IP 0.0.0.0) for target ip. Otherwise it returns nil.
func (a *announcer) claimant(frame []byte, ip netip.Addr) net.HardwareAddr {
	var f ethernetFrame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != etherTypeARP {
		return nil
	}
	var p arpPacket
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return nil
	}
	if p.Operation != arpOpRequest && p.Operation != arpOpReply {
		return nil
	}
	if bytes.Equal(p.SenderHardwareAddr, a.mac) {
		return nil // ours, e.g. reflected back by a hairpinning bridge
	}
	if p.SenderIP == ip {
		return p.SenderHardwareAddr
	}
	if p.Operation == arpOpRequest && p.SenderIP == ipv4Zero && p.TargetIP == ip {
		return p.SenderHardwareAddr
	}
	return nil
}
