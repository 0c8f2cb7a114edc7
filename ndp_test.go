package main

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"vipd/test/lab"
)

var (
	ndpTestMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	ndpTestVIP = netip.MustParseAddr("2001:db8::100")
)

// The unsolicited NA for 2001:db8::100 from 02:00:00:00:00:01, laid out per
// RFC 2464 (Ethernet), RFC 8200 section 3 (IPv6 header) and RFC 4861
// section 4.4 (Neighbor Advertisement) with a Target Link-Layer Address
// option (section 4.6.1). The checksum bytes are checked separately.
var naFrameBytes = []byte{
	0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // Ethernet destination: all-nodes multicast
	0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // Ethernet source
	0x86, 0xdd, // EtherType IPv6
	0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
	0x00, 0x20, // payload length 32: NA 24 + option 8
	0x3a,                                                                                           // next header ICMPv6
	0xff,                                                                                           // hop limit 255
	0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, // source: the VIP
	0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // destination ff02::1
	0x88, 0x00, // type 136, code 0
	0xff, 0xff, // checksum (placeholder, see ndpChecksumOffset)
	0x20, 0x00, 0x00, 0x00, // R=0 S=0 O=1, reserved
	0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, // target: the VIP
	0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // option 2 (target link-layer address), length 1 (8 bytes), MAC
}

const ndpChecksumOffset = 14 + 40 + 2

// referenceChecksum is an independent RFC 1071 computation: the pseudo-header
// and message laid out in one buffer, summed as 32-bit words into 64 bits.
func referenceChecksum(src, dst netip.Addr, icmp []byte) uint16 {
	buf := make([]byte, 0, 40+len(icmp)+4)
	s, d := src.As16(), dst.As16()
	buf = append(buf, s[:]...)
	buf = append(buf, d[:]...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(icmp)))
	buf = append(buf, 0, 0, 0, 58)
	buf = append(buf, icmp...)
	for len(buf)%4 != 0 {
		buf = append(buf, 0)
	}
	var sum uint64
	for i := 0; i < len(buf); i += 4 {
		sum += uint64(binary.BigEndian.Uint32(buf[i:]))
	}
	for sum>>16 != 0 {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func TestUnsolicitedNABytes(t *testing.T) {
	frame, err := unsolicitedNA(ndpTestMAC, ndpTestVIP)
	if err != nil {
		t.Fatal(err)
	}
	if len(frame) != len(naFrameBytes) {
		t.Fatalf("frame is %d bytes, want %d:\n% x", len(frame), len(naFrameBytes), frame)
	}
	masked := bytes.Clone(frame)
	masked[ndpChecksumOffset], masked[ndpChecksumOffset+1] = 0xff, 0xff
	if !bytes.Equal(masked, naFrameBytes) {
		t.Fatalf("frame (checksum masked):\n got % x\nwant % x", masked, naFrameBytes)
	}

	icmp := bytes.Clone(frame[14+40:])
	got := binary.BigEndian.Uint16(icmp[2:4])
	icmp[2], icmp[3] = 0, 0
	if want := referenceChecksum(ndpTestVIP, ipv6AllNodes, icmp); got != want {
		t.Fatalf("checksum %#04x, independent computation gives %#04x", got, want)
	}
	// A receiver's check: the sum over everything, checksum included, is
	// all ones (so the reference gives zero).
	if v := referenceChecksum(ndpTestVIP, ipv6AllNodes, frame[14+40:]); v != 0 {
		t.Fatalf("verification sum %#04x, want 0", v)
	}
}

// decodeNA is a second, hand-written decoder that knows nothing of ndp.go:
// fixed offsets straight from the RFCs, so that a layout bug shared by
// MarshalBinary and UnmarshalBinary still shows.
type decodedNA struct {
	ethDst, ethSrc   net.HardwareAddr
	etherType        uint16
	version          byte
	payloadLen       uint16
	nextHeader, hops byte
	src, dst         netip.Addr
	icmpType, code   byte
	router, solicit  bool
	override         bool
	target           netip.Addr
	optType, optLen  byte
	optMAC           net.HardwareAddr
}

func decodeNA(f []byte) decodedNA {
	ip := f[14:]
	icmp := ip[40:]
	return decodedNA{
		ethDst: net.HardwareAddr(f[0:6]), ethSrc: net.HardwareAddr(f[6:12]),
		etherType: uint16(f[12])<<8 | uint16(f[13]),
		version:   ip[0] >> 4, payloadLen: uint16(ip[4])<<8 | uint16(ip[5]),
		nextHeader: ip[6], hops: ip[7],
		src: netip.AddrFrom16([16]byte(ip[8:24])), dst: netip.AddrFrom16([16]byte(ip[24:40])),
		icmpType: icmp[0], code: icmp[1],
		router: icmp[4]&0x80 != 0, solicit: icmp[4]&0x40 != 0, override: icmp[4]&0x20 != 0,
		target:  netip.AddrFrom16([16]byte(icmp[8:24])),
		optType: icmp[24], optLen: icmp[25], optMAC: net.HardwareAddr(icmp[26:32]),
	}
}

func TestUnsolicitedNAFields(t *testing.T) {
	frame, err := unsolicitedNA(ndpTestMAC, ndpTestVIP)
	if err != nil {
		t.Fatal(err)
	}
	d := decodeNA(frame)
	checks := []struct {
		what      string
		got, want any
	}{
		{"Ethernet destination", d.ethDst.String(), "33:33:00:00:00:01"},
		{"Ethernet source", d.ethSrc.String(), ndpTestMAC.String()},
		{"EtherType", d.etherType, uint16(0x86dd)},
		{"IP version", d.version, byte(6)},
		{"payload length", d.payloadLen, uint16(32)},
		{"next header", d.nextHeader, byte(58)},
		{"hop limit", d.hops, byte(255)},
		{"source", d.src, ndpTestVIP},
		{"destination", d.dst, netip.MustParseAddr("ff02::1")},
		{"ICMPv6 type", d.icmpType, byte(136)},
		{"code", d.code, byte(0)},
		{"Router flag", d.router, false},
		{"Solicited flag", d.solicit, false},
		{"Override flag", d.override, true},
		{"target", d.target, ndpTestVIP},
		{"option type", d.optType, byte(2)},
		{"option length", d.optLen, byte(1)},
		{"option MAC", d.optMAC.String(), ndpTestMAC.String()},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}

	// And the package's own decoder agrees with the hand-written one.
	var f ethernetFrame
	var h ipv6Header
	var m ndpMessage
	if err := f.UnmarshalBinary(frame); err != nil {
		t.Fatal(err)
	}
	if err := h.UnmarshalBinary(f.Payload); err != nil {
		t.Fatal(err)
	}
	if err := m.UnmarshalBinary(f.Payload[40 : 40+h.PayloadLength]); err != nil {
		t.Fatal(err)
	}
	if h.Source != d.src || h.Destination != d.dst || h.HopLimit != d.hops || m.Type != d.icmpType ||
		m.Target != d.target || m.Flags != naFlagOverride || m.LinkLayerAddr.String() != d.optMAC.String() {
		t.Fatalf("decoders disagree: %+v %+v vs %+v", h, m, d)
	}
}

func TestNDPProbe(t *testing.T) {
	frame, err := ndpProbe(ndpTestMAC, ndpTestVIP)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x33, 0x33, 0xff, 0x00, 0x01, 0x00, // solicited-node group's MAC
		0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
		0x86, 0xdd,
		0x60, 0x00, 0x00, 0x00, 0x00, 0x18, 0x3a, 0xff, // payload 24: no option from ::
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // source ::
		0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x00, 0x01, 0x00, // ff02::1:ff00:100
		0x87, 0x00, // type 135
	}
	if !bytes.Equal(frame[:len(want)], want) {
		t.Fatalf("probe:\n got % x\nwant % x", frame[:len(want)], want)
	}
	icmp := bytes.Clone(frame[54:78])
	if v := referenceChecksum(ipv6Unspecified, solicitedNode(ndpTestVIP), icmp); v != 0 {
		t.Fatalf("probe checksum does not verify (%#04x)", v)
	}
	if !bytes.Equal(frame[62:78], ndpTestVIP.AsSlice()) {
		t.Fatalf("target % x", frame[62:78])
	}
}

func TestNDPClaimant(t *testing.T) {
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	na, _ := unsolicitedNA(other, ndpTestVIP)
	if mac := ndpClaimant(na, ndpTestVIP, ndpTestMAC); mac.String() != other.String() {
		t.Fatalf("another host's NA: claimant %v, want %v", mac, other)
	}
	if mac := ndpClaimant(na, ndpTestVIP, other); mac != nil {
		t.Fatalf("our own NA reported as a claimant (%v)", mac)
	}
	if mac := ndpClaimant(na, netip.MustParseAddr("2001:db8::200"), ndpTestMAC); mac != nil {
		t.Fatalf("an NA for another address reported (%v)", mac)
	}
	probe, _ := ndpProbe(other, ndpTestVIP)
	if mac := ndpClaimant(probe, ndpTestVIP, ndpTestMAC); mac.String() != other.String() {
		t.Fatalf("a simultaneous probe: claimant %v, want %v", mac, other)
	}
	bad := bytes.Clone(na)
	bad[len(bad)-1] ^= 1 // corrupts the option, and so the checksum
	if mac := ndpClaimant(bad, ndpTestVIP, ndpTestMAC); mac != nil {
		t.Fatalf("an NA with a wrong checksum reported (%v)", mac)
	}
	hops := bytes.Clone(na)
	hops[14+7] = 64 // forwarded: RFC 4861 says drop
	if mac := ndpClaimant(hops, ndpTestVIP, ndpTestMAC); mac != nil {
		t.Fatalf("an NA with hop limit 64 reported (%v)", mac)
	}
}

func TestNDPMessageErrors(t *testing.T) {
	for _, m := range []ndpMessage{
		{Type: 1, Target: ndpTestVIP},
		{Type: icmpv6NeighAdv, Target: netip.MustParseAddr("192.0.2.1")},
		{Type: icmpv6NeighAdv, Target: ndpTestVIP, LinkLayerAddr: net.HardwareAddr{1, 2, 3}},
	} {
		if _, err := m.MarshalBinary(); err == nil {
			t.Errorf("%+v: no error", m)
		}
	}
	var m ndpMessage
	if err := m.UnmarshalBinary(make([]byte, 10)); err == nil {
		t.Error("short message accepted")
	}
	na, _ := unsolicitedNA(ndpTestMAC, ndpTestVIP)
	msg := bytes.Clone(na[54:])
	msg[25] = 0 // zero-length option would loop forever
	if err := m.UnmarshalBinary(msg); err == nil {
		t.Error("zero-length option accepted")
	}
}

func TestNDPProbeSeesOwner(t *testing.T) {
	l := newARPLink(t)
	a := openAnnouncerFor(t, l.node, "vn0", true)
	l.peer.IP(t, "addr", "add", ndpTestVIP.String()+"/64", "dev", "vp0", "nodad")
	mac, err := a.probe(t.Context(), ndpTestVIP, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if mac.String() != testPeerMAC.String() {
		t.Fatalf("probe while the peer owns %s: got %v, want %v", ndpTestVIP, mac, testPeerMAC)
	}
	l.peer.IP(t, "addr", "del", ndpTestVIP.String()+"/64", "dev", "vp0")
	if mac, err := a.probe(t.Context(), ndpTestVIP, 300*time.Millisecond); mac != nil || err != nil {
		t.Fatalf("probe after the peer let go: %v, %v; want nil, nil", mac, err)
	}
}

func TestNAMovesNeighbour(t *testing.T) {
	l := newARPLink(t)
	a := openAnnouncerFor(t, l.node, "vn0", true)
	l.peer.IP(t, "addr", "add", "2001:db8::1/64", "dev", "vp0", "nodad")
	l.peer.IP(t, "neigh", "replace", ndpTestVIP.String(), "lladdr", "02:00:00:00:00:99", "dev", "vp0", "nud", "stale")
	if err := a.announce(ndpTestVIP); err != nil {
		t.Fatal(err)
	}
	lab.WaitFor(t, 2*time.Second, "the peer's entry to move", func() bool {
		return strings.Contains(l.peer.IP(t, "-6", "neigh", "show", ndpTestVIP.String(), "dev", "vp0"), "lladdr "+testNodeMAC.String())
	})
}
