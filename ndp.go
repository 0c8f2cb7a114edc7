package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// IPv6 neighbour discovery, the IPv6 counterpart of garp.go: unsolicited
// Neighbor Advertisements announce the VIP, and a Neighbor Solicitation from
// the unspecified address (as in duplicate address detection) probes for
// another owner. RFC 8200 (IPv6 header), RFC 4861 (ND), RFC 4443 (ICMPv6).

const (
	etherTypeIPv6 = 0x86dd

	ipv6HeaderLen   = 40
	protoICMPv6     = 58
	ndpHopLimit     = 255 // RFC 4861 7.1.2: receivers drop ND with any other
	icmpv6NeighSol  = 135
	icmpv6NeighAdv  = 136
	ndpMessageLen   = 24 // type, code, checksum, flags/reserved, target
	ndpOptSourceLL  = 1
	ndpOptTargetLL  = 2
	ndpOptLLLen     = 8 // type, length (in 8-byte units), 6-byte MAC
	naFlagRouter    = 1 << 31
	naFlagSolicited = 1 << 30
	naFlagOverride  = 1 << 29
)

var (
	ipv6AllNodes    = netip.MustParseAddr("ff02::1")
	ipv6Unspecified = netip.IPv6Unspecified()
)

// ipv6Header is the fixed IPv6 header (RFC 8200 section 3).
type ipv6Header struct {
	TrafficClass  uint8
	FlowLabel     uint32 // 20 bits
	PayloadLength uint16
	NextHeader    uint8
	HopLimit      uint8
	Source        netip.Addr
	Destination   netip.Addr
}

func (h *ipv6Header) MarshalBinary() ([]byte, error) {
	if !h.Source.Is6() || h.Source.Is4In6() || !h.Destination.Is6() || h.Destination.Is4In6() {
		return nil, fmt.Errorf("ipv6: addresses %s, %s are not both IPv6", h.Source, h.Destination)
	}
	if h.FlowLabel >= 1<<20 {
		return nil, fmt.Errorf("ipv6: flow label %#x is wider than 20 bits", h.FlowLabel)
	}
	b := make([]byte, ipv6HeaderLen)
	binary.BigEndian.PutUint32(b[0:4], 6<<28|uint32(h.TrafficClass)<<20|h.FlowLabel)
	binary.BigEndian.PutUint16(b[4:6], h.PayloadLength)
	b[6], b[7] = h.NextHeader, h.HopLimit
	src, dst := h.Source.As16(), h.Destination.As16()
	copy(b[8:24], src[:])
	copy(b[24:40], dst[:])
	return b, nil
}

func (h *ipv6Header) UnmarshalBinary(b []byte) error {
	if len(b) < ipv6HeaderLen {
		return fmt.Errorf("ipv6: header is %d bytes, want %d", len(b), ipv6HeaderLen)
	}
	word := binary.BigEndian.Uint32(b[0:4])
	if v := word >> 28; v != 6 {
		return fmt.Errorf("ipv6: version %d", v)
	}
	*h = ipv6Header{
		TrafficClass:  uint8(word >> 20),
		FlowLabel:     word & (1<<20 - 1),
		PayloadLength: binary.BigEndian.Uint16(b[4:6]),
		NextHeader:    b[6],
		HopLimit:      b[7],
		Source:        netip.AddrFrom16([16]byte(b[8:24])),
		Destination:   netip.AddrFrom16([16]byte(b[24:40])),
	}
	// IPv4-mapped addresses stand for IPv4 nodes inside a host's stack
	// (RFC 4291 2.5.5.2) and have no business on the wire; MarshalBinary
	// refuses them, so a header that carries one is not a value of this type.
	if h.Source.Is4In6() || h.Destination.Is4In6() {
		return fmt.Errorf("ipv6: IPv4-mapped address in %s -> %s", h.Source, h.Destination)
	}
	return nil
}

// ndpMessage is an ICMPv6 Neighbor Solicitation or Advertisement (RFC 4861
// sections 4.3 and 4.4) with at most one link-layer address option: the
// source's for a solicitation, the target's for an advertisement. The
// checksum covers a pseudo-header, so it is filled in by ndpPacket, which
// knows the addresses.
type ndpMessage struct {
	Type          uint8  // icmpv6NeighSol or icmpv6NeighAdv
	Flags         uint32 // NA: naFlagRouter|naFlagSolicited|naFlagOverride
	Checksum      uint16
	Target        netip.Addr
	LinkLayerAddr net.HardwareAddr // nil: no option
}

func (m *ndpMessage) MarshalBinary() ([]byte, error) {
	if m.Type != icmpv6NeighSol && m.Type != icmpv6NeighAdv {
		return nil, fmt.Errorf("ndp: ICMPv6 type %d is not a neighbour message", m.Type)
	}
	if !m.Target.Is6() || m.Target.Is4In6() {
		return nil, fmt.Errorf("ndp: target %s is not IPv6", m.Target)
	}
	b := make([]byte, ndpMessageLen, ndpMessageLen+ndpOptLLLen)
	b[0] = m.Type
	binary.BigEndian.PutUint16(b[2:4], m.Checksum)
	binary.BigEndian.PutUint32(b[4:8], m.Flags)
	target := m.Target.As16()
	copy(b[8:24], target[:])
	if m.LinkLayerAddr != nil {
		if len(m.LinkLayerAddr) != 6 {
			return nil, fmt.Errorf("ndp: link-layer address %q is not 6 bytes", m.LinkLayerAddr)
		}
		opt := byte(ndpOptTargetLL)
		if m.Type == icmpv6NeighSol {
			opt = ndpOptSourceLL
		}
		b = append(append(b, opt, 1), m.LinkLayerAddr...)
	}
	return b, nil
}

// UnmarshalBinary decodes a neighbour message; the link-layer option of
// the kind that belongs to the message type is kept, other options skipped.
// Like Linux's receivers (ndisc_parse_options), it takes the first such
// option and ignores later ones, and refuses bytes after the last option
// that are too few for another.
func (m *ndpMessage) UnmarshalBinary(b []byte) error {
	if len(b) < ndpMessageLen {
		return fmt.Errorf("ndp: message is %d bytes, want at least %d", len(b), ndpMessageLen)
	}
	*m = ndpMessage{
		Type:     b[0],
		Checksum: binary.BigEndian.Uint16(b[2:4]),
		Flags:    binary.BigEndian.Uint32(b[4:8]),
		Target:   netip.AddrFrom16([16]byte(b[8:24])),
	}
	if b[1] != 0 || (m.Type != icmpv6NeighSol && m.Type != icmpv6NeighAdv) {
		return fmt.Errorf("ndp: ICMPv6 type %d code %d is not a neighbour message", b[0], b[1])
	}
	// MarshalBinary refuses an IPv4-mapped target (one a host's stack uses
	// for IPv4 peers, never on the wire), so it is not a value of this type.
	if m.Target.Is4In6() {
		return fmt.Errorf("ndp: target %s is IPv4-mapped", m.Target)
	}
	want := byte(ndpOptTargetLL)
	if m.Type == icmpv6NeighSol {
		want = ndpOptSourceLL
	}
	seen := false
	for opts := b[ndpMessageLen:]; len(opts) > 0; {
		if len(opts) < 2 {
			return fmt.Errorf("ndp: %d byte after the last option", len(opts))
		}
		n := int(opts[1]) * 8
		if n == 0 || n > len(opts) {
			return fmt.Errorf("ndp: option length %d does not fit", n)
		}
		if opts[0] == want && !seen {
			seen = true
			if n == ndpOptLLLen {
				m.LinkLayerAddr = bytes.Clone(opts[2:8])
			}
		}
		opts = opts[n:]
	}
	return nil
}

// icmpv6Checksum is the Internet checksum of an ICMPv6 message (with its
// checksum field zero) over the IPv6 pseudo-header (RFC 8200 section 8.1).
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	add(binary.BigEndian.AppendUint32(nil, uint32(len(msg))))
	add([]byte{0, 0, 0, protoICMPv6})
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ndpPacket builds the Ethernet frame for a neighbour message from src to
// dst, with the checksum filled in.
func ndpPacket(ethDst, ethSrc net.HardwareAddr, src, dst netip.Addr, m ndpMessage) ([]byte, error) {
	m.Checksum = 0
	msg, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint16(msg[2:4], icmpv6Checksum(src, dst, msg))
	hdr, err := (&ipv6Header{PayloadLength: uint16(len(msg)), NextHeader: protoICMPv6, HopLimit: ndpHopLimit, Source: src, Destination: dst}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	return (&ethernetFrame{Destination: ethDst, Source: ethSrc, EtherType: etherTypeIPv6, Payload: append(hdr, msg...)}).MarshalBinary()
}

// multicastMAC is the Ethernet address of an IPv6 multicast group
// (RFC 2464 section 7): 33:33 and the group's last 32 bits.
func multicastMAC(group netip.Addr) net.HardwareAddr {
	g := group.As16()
	return net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}
}

// solicitedNode is the solicited-node multicast group of ip (RFC 4291
// section 2.7.1): ff02::1:ff and ip's last 24 bits.
func solicitedNode(ip netip.Addr) netip.Addr {
	a := ip.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 0x01, 12: 0xff, 13: a[13], 14: a[14], 15: a[15]})
}

// unsolicitedNA is the IPv6 announcement of ip owned by mac: a Neighbor
// Advertisement to all nodes with Override set and Solicited clear, so that
// every neighbour with an entry for ip replaces its link-layer address.
func unsolicitedNA(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	return ndpPacket(multicastMAC(ipv6AllNodes), mac, ip, ipv6AllNodes, ndpMessage{
		Type: icmpv6NeighAdv, Flags: naFlagOverride, Target: ip, LinkLayerAddr: mac,
	})
}

// ndpProbe is the IPv6 probe for ip: a Neighbor Solicitation from the
// unspecified address to ip's solicited-node group, without a source
// link-layer option (RFC 4862 5.4.2). An owner answers with an NA to all
// nodes.
func ndpProbe(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	group := solicitedNode(ip)
	return ndpPacket(multicastMAC(group), mac, ipv6Unspecified, group, ndpMessage{Type: icmpv6NeighSol, Target: ip})
}

// ndpClaimant returns the MAC of another host that claims ip in frame: a
// Neighbor Advertisement for ip, or a probe (solicitation from ::) for ip,
// not sent from self. Otherwise nil.
func ndpClaimant(frame []byte, ip netip.Addr, self net.HardwareAddr) net.HardwareAddr {
	var f ethernetFrame
	var h ipv6Header
	var m ndpMessage
	if f.UnmarshalBinary(frame) != nil || f.EtherType != etherTypeIPv6 || h.UnmarshalBinary(f.Payload) != nil ||
		h.NextHeader != protoICMPv6 || h.HopLimit != ndpHopLimit || int(h.PayloadLength) > len(f.Payload)-ipv6HeaderLen {
		return nil
	}
	msg := f.Payload[ipv6HeaderLen : ipv6HeaderLen+int(h.PayloadLength)]
	if m.UnmarshalBinary(msg) != nil || m.Target != ip || bytes.Equal(f.Source, self) {
		return nil
	}
	zeroed := bytes.Clone(msg)
	zeroed[2], zeroed[3] = 0, 0
	if icmpv6Checksum(h.Source, h.Destination, zeroed) != m.Checksum {
		return nil
	}
	var claimed net.HardwareAddr
	switch {
	case m.Type == icmpv6NeighAdv && m.LinkLayerAddr != nil:
		claimed = m.LinkLayerAddr
	case m.Type == icmpv6NeighAdv, m.Type == icmpv6NeighSol && h.Source == ipv6Unspecified:
		claimed = f.Source
	}
	// An advertisement from another source that names our MAC says the
	// address is ours (e.g. a switch answering for us), as in claimant's
	// ARP check: not another owner.
	if bytes.Equal(claimed, self) {
		return nil
	}
	return claimed
}
