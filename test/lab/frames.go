package lab

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// The lab's own reading of the announcements on the wire: Ethernet (IEEE
// 802.3), ARP (RFC 826) and an ICMPv6 neighbour advertisement (RFC 4861,
// 4.4) inside IPv6 (RFC 8200), parsed here byte by byte, not with vipd's
// encoders and decoders.

const (
	etherTypeARP  = 0x0806
	etherTypeIPv6 = 0x86dd
	ipv6HeaderLen = 40
	protoICMPv6   = 58
	icmpv6NA      = 136
	naOverride    = 0x20 // the O flag, in the first byte after the checksum
	optTargetLL   = 2    // target link-layer address option
)

var errShort = errors.New("short frame")

// ARP is an Ethernet/IPv4 ARP packet.
type ARP struct {
	Op                  uint16
	SenderMAC           net.HardwareAddr
	SenderIP            netip.Addr
	TargetMAC           net.HardwareAddr
	TargetIP            netip.Addr
	Source, Destination net.HardwareAddr // the Ethernet header's
}

// ParseARP reads an Ethernet frame carrying ARP for IPv4 over Ethernet.
func ParseARP(frame []byte) (ARP, error) {
	if len(frame) < 14+28 {
		return ARP{}, errShort
	}
	if binary.BigEndian.Uint16(frame[12:14]) != etherTypeARP {
		return ARP{}, errors.New("not ARP")
	}
	p := frame[14:]
	// htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4
	if binary.BigEndian.Uint16(p[0:2]) != 1 || binary.BigEndian.Uint16(p[2:4]) != 0x0800 || p[4] != 6 || p[5] != 4 {
		return ARP{}, errors.New("not IPv4 over Ethernet")
	}
	return ARP{
		Op:          binary.BigEndian.Uint16(p[6:8]),
		SenderMAC:   net.HardwareAddr(p[8:14]),
		SenderIP:    netip.AddrFrom4([4]byte(p[14:18])),
		TargetMAC:   net.HardwareAddr(p[18:24]),
		TargetIP:    netip.AddrFrom4([4]byte(p[24:28])),
		Source:      net.HardwareAddr(frame[6:12]),
		Destination: net.HardwareAddr(frame[0:6]),
	}, nil
}

// NA is an unsolicited-or-not neighbour advertisement.
type NA struct {
	Source, Destination netip.Addr // the IPv6 header's
	Flags               uint8      // R 0x80, S 0x40, O 0x20
	Target              netip.Addr
	TargetMAC           net.HardwareAddr // the target link-layer address option; nil without
}

// ParseNA reads an Ethernet frame carrying an ICMPv6 neighbour
// advertisement directly after the IPv6 header (no extension headers, as
// the neighbour discovery RFC has it).
func ParseNA(frame []byte) (NA, error) {
	if len(frame) < 14+ipv6HeaderLen+24 {
		return NA{}, errShort
	}
	if binary.BigEndian.Uint16(frame[12:14]) != etherTypeIPv6 {
		return NA{}, errors.New("not IPv6")
	}
	ip := frame[14:]
	if ip[0]>>4 != 6 || ip[6] != protoICMPv6 {
		return NA{}, errors.New("not ICMPv6")
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if plen > len(ip)-ipv6HeaderLen || plen < 24 {
		return NA{}, errShort
	}
	m := ip[ipv6HeaderLen : ipv6HeaderLen+plen]
	if m[0] != icmpv6NA || m[1] != 0 {
		return NA{}, errors.New("not a neighbour advertisement")
	}
	na := NA{
		Source:      netip.AddrFrom16([16]byte(ip[8:24])),
		Destination: netip.AddrFrom16([16]byte(ip[24:40])),
		Flags:       m[4],
		Target:      netip.AddrFrom16([16]byte(m[8:24])),
	}
	for opts := m[24:]; len(opts) >= 2; {
		n := int(opts[1]) * 8
		if n == 0 || n > len(opts) {
			return NA{}, errors.New("bad option length")
		}
		if opts[0] == optTargetLL && n >= 8 {
			na.TargetMAC = net.HardwareAddr(opts[2:8])
		}
		opts = opts[n:]
	}
	return na, nil
}

// allNodes is ff02::1.
var allNodes = netip.MustParseAddr("ff02::1")
