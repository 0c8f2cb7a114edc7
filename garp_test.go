package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
	"vipd/test/lab"
)

var (
	testNodeMAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	testPeerMAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	testOtherMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x77}
	testVIP      = netip.MustParseAddr("192.0.2.100")
	testPeerIP   = netip.MustParseAddr("192.0.2.1")
	testOtherVIP = netip.MustParseAddr("192.0.2.101")
)

// Byte-level test vectors, RFC 826 layout.
var (
	// 192.0.2.100 is at 02:00:00:00:00:01, request form of gratuitous ARP.
	arpGratuitousRequestBytes = []byte{
		0x00, 0x01, // htype: Ethernet
		0x08, 0x00, // ptype: IPv4
		0x06,       // hlen
		0x04,       // plen
		0x00, 0x01, // op: request
		0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // sha: 02:00:00:00:00:01
		0xc0, 0x00, 0x02, 0x64, // spa: 192.0.2.100
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha: zero
		0xc0, 0x00, 0x02, 0x64, // tpa: 192.0.2.100
	}
	// Reply form of gratuitous ARP.
	arpGratuitousReplyBytes = []byte{
		0x00, 0x01, // htype: Ethernet
		0x08, 0x00, // ptype: IPv4
		0x06,       // hlen
		0x04,       // plen
		0x00, 0x02, // op: reply
		0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // sha: 02:00:00:00:00:01
		0xc0, 0x00, 0x02, 0x64, // spa: 192.0.2.100
		0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // tha: the sender's MAC, as arp_is_garp wants
		0xc0, 0x00, 0x02, 0x64, // tpa: 192.0.2.100
	}
	// RFC 5227 probe for 192.0.2.100 from 02:00:00:00:00:01.
	arpProbeBytes = []byte{
		0x00, 0x01, // htype: Ethernet
		0x08, 0x00, // ptype: IPv4
		0x06,       // hlen
		0x04,       // plen
		0x00, 0x01, // op: request
		0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // sha: 02:00:00:00:00:01
		0x00, 0x00, 0x00, 0x00, // spa: 0.0.0.0
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha: zero
		0xc0, 0x00, 0x02, 0x64, // tpa: 192.0.2.100
	}
	// 192.0.2.1 (02:00:00:00:00:02) answers 192.0.2.100 (02:00:00:00:00:01).
	arpUnicastReplyBytes = []byte{
		0x00, 0x01, // htype: Ethernet
		0x08, 0x00, // ptype: IPv4
		0x06,       // hlen
		0x04,       // plen
		0x00, 0x02, // op: reply
		0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // sha: 02:00:00:00:00:02
		0xc0, 0x00, 0x02, 0x01, // spa: 192.0.2.1
		0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // tha: 02:00:00:00:00:01
		0xc0, 0x00, 0x02, 0x64, // tpa: 192.0.2.100
	}
	// Broadcast Ethernet header from 02:00:00:00:00:01, type ARP.
	ethARPBroadcastHeader = []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination: broadcast
		0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source: 02:00:00:00:00:01
		0x08, 0x06, // EtherType: ARP
	}
	// Padding from 14+28 = 42 bytes to the 60-byte minimum.
	ethARPPadding = make([]byte, 18)
)

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestARPPacketMarshalBinary(t *testing.T) {
	tests := []struct {
		name string
		p    arpPacket
		want []byte
	}{
		{
			name: "gratuitous request",
			p: arpPacket{
				Operation:          1,
				SenderHardwareAddr: testNodeMAC,
				SenderIP:           testVIP,
				TargetHardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0},
				TargetIP:           testVIP,
			},
			want: arpGratuitousRequestBytes,
		},
		{
			name: "gratuitous reply",
			p: arpPacket{
				Operation:          2,
				SenderHardwareAddr: testNodeMAC,
				SenderIP:           testVIP,
				TargetHardwareAddr: testNodeMAC,
				TargetIP:           testVIP,
			},
			want: arpGratuitousReplyBytes,
		},
		{
			name: "probe",
			p: arpPacket{
				Operation:          1,
				SenderHardwareAddr: testNodeMAC,
				SenderIP:           netip.MustParseAddr("0.0.0.0"),
				TargetHardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0},
				TargetIP:           testVIP,
			},
			want: arpProbeBytes,
		},
		{
			name: "unicast reply",
			p: arpPacket{
				Operation:          2,
				SenderHardwareAddr: testPeerMAC,
				SenderIP:           testPeerIP,
				TargetHardwareAddr: testNodeMAC,
				TargetIP:           testVIP,
			},
			want: arpUnicastReplyBytes,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.p.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("MarshalBinary:\n got % x\nwant % x", got, tt.want)
			}
			// Round trip.
			var back arpPacket
			if err := back.UnmarshalBinary(got); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if !reflect.DeepEqual(back, tt.p) {
				t.Fatalf("round trip: got %+v, want %+v", back, tt.p)
			}
		})
	}
}

func TestARPPacketMarshalBinaryErrors(t *testing.T) {
	good := arpPacket{
		Operation:          1,
		SenderHardwareAddr: testNodeMAC,
		SenderIP:           testVIP,
		TargetHardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0},
		TargetIP:           testVIP,
	}
	if _, err := good.MarshalBinary(); err != nil {
		t.Fatalf("control packet: %v", err)
	}
	tests := []struct {
		name   string
		modify func(p *arpPacket)
	}{
		{"5-byte sender MAC", func(p *arpPacket) { p.SenderHardwareAddr = testNodeMAC[:5] }},
		{"nil sender MAC", func(p *arpPacket) { p.SenderHardwareAddr = nil }},
		{"EUI-64 sender MAC", func(p *arpPacket) {
			p.SenderHardwareAddr = net.HardwareAddr{2, 0, 0, 0, 0, 0, 0, 1}
		}},
		{"nil target MAC", func(p *arpPacket) { p.TargetHardwareAddr = nil }},
		{"7-byte target MAC", func(p *arpPacket) { p.TargetHardwareAddr = make(net.HardwareAddr, 7) }},
		{"IPv6 sender", func(p *arpPacket) { p.SenderIP = netip.MustParseAddr("2001:db8::1") }},
		{"IPv6 target", func(p *arpPacket) { p.TargetIP = netip.MustParseAddr("2001:db8::1") }},
		{"IPv4-mapped sender", func(p *arpPacket) { p.SenderIP = netip.MustParseAddr("::ffff:192.0.2.100") }},
		{"zero sender", func(p *arpPacket) { p.SenderIP = netip.Addr{} }},
		{"zero target", func(p *arpPacket) { p.TargetIP = netip.Addr{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := good
			tt.modify(&p)
			if b, err := p.MarshalBinary(); err == nil {
				t.Fatalf("MarshalBinary(%+v) = % x, want error", p, b)
			}
		})
	}
}

func TestARPPacketUnmarshalBinary(t *testing.T) {
	want := arpPacket{
		Operation:          2,
		SenderHardwareAddr: testPeerMAC,
		SenderIP:           testPeerIP,
		TargetHardwareAddr: testNodeMAC,
		TargetIP:           testVIP,
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"exact", arpUnicastReplyBytes},
		{"with Ethernet padding", concat(arpUnicastReplyBytes, ethARPPadding)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := bytes.Clone(tt.in)
			var p arpPacket
			if err := p.UnmarshalBinary(in); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if !reflect.DeepEqual(p, want) {
				t.Fatalf("UnmarshalBinary: got %+v, want %+v", p, want)
			}
			// The result must not alias the input buffer.
			for i := range in {
				in[i] = 0xee
			}
			if !reflect.DeepEqual(p, want) {
				t.Fatalf("result changed with the input buffer: %+v", p)
			}
		})
	}
}

func TestARPPacketUnmarshalBinaryErrors(t *testing.T) {
	with := func(off int, v ...byte) []byte {
		b := bytes.Clone(arpGratuitousRequestBytes)
		copy(b[off:], v)
		return b
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"27 bytes", arpGratuitousRequestBytes[:27]},
		{"8 bytes", arpGratuitousRequestBytes[:8]},
		{"htype IEEE 802", with(0, 0x00, 0x06)},
		{"htype 0", with(0, 0x00, 0x00)},
		{"ptype IPv6", with(2, 0x86, 0xdd)},
		{"hlen 8", with(4, 8)},
		{"plen 16", with(5, 16)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p arpPacket
			if err := p.UnmarshalBinary(tt.in); err == nil {
				t.Fatalf("UnmarshalBinary(% x) = %+v, want error", tt.in, p)
			}
		})
	}
}

func TestEthernetFrameMarshalBinary(t *testing.T) {
	long := bytes.Repeat([]byte{0xab}, 100)
	exact := bytes.Repeat([]byte{0xcd}, 46)
	tests := []struct {
		name string
		f    ethernetFrame
		want []byte
	}{
		{
			name: "ARP padded to 60 bytes",
			f: ethernetFrame{
				Destination: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
				Source:      testNodeMAC,
				EtherType:   0x0806,
				Payload:     arpGratuitousRequestBytes,
			},
			want: concat(ethARPBroadcastHeader, arpGratuitousRequestBytes, ethARPPadding),
		},
		{
			name: "empty payload padded to 60 bytes",
			f: ethernetFrame{
				Destination: testPeerMAC,
				Source:      testNodeMAC,
				EtherType:   0x0800,
			},
			want: concat([]byte{
				0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination
				0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
				0x08, 0x00, // EtherType: IPv4
			}, make([]byte, 46)),
		},
		{
			name: "46-byte payload not padded",
			f: ethernetFrame{
				Destination: testPeerMAC,
				Source:      testNodeMAC,
				EtherType:   0x88b5,
				Payload:     exact,
			},
			want: concat([]byte{
				0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination
				0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
				0x88, 0xb5, // EtherType: local experimental
			}, exact),
		},
		{
			name: "long payload not padded",
			f: ethernetFrame{
				Destination: testPeerMAC,
				Source:      testNodeMAC,
				EtherType:   0x88b5,
				Payload:     long,
			},
			want: concat([]byte{
				0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination
				0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
				0x88, 0xb5, // EtherType
			}, long),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.f.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("MarshalBinary:\n got % x\nwant % x", got, tt.want)
			}
			var back ethernetFrame
			if err := back.UnmarshalBinary(got); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if !bytes.Equal(back.Destination, tt.f.Destination) || !bytes.Equal(back.Source, tt.f.Source) ||
				back.EtherType != tt.f.EtherType {
				t.Fatalf("round trip header: got %v %v %#04x, want %v %v %#04x",
					back.Destination, back.Source, back.EtherType, tt.f.Destination, tt.f.Source, tt.f.EtherType)
			}
			// The payload comes back with its padding.
			if !bytes.Equal(back.Payload, tt.want[14:]) {
				t.Fatalf("round trip payload: got % x, want % x", back.Payload, tt.want[14:])
			}
			if !bytes.HasPrefix(back.Payload, tt.f.Payload) {
				t.Fatalf("round trip payload % x does not start with % x", back.Payload, tt.f.Payload)
			}
		})
	}
}

func TestEthernetFrameErrors(t *testing.T) {
	for _, f := range []ethernetFrame{
		{Destination: testPeerMAC[:5], Source: testNodeMAC, EtherType: 0x0806},
		{Destination: nil, Source: testNodeMAC, EtherType: 0x0806},
		{Destination: testPeerMAC, Source: nil, EtherType: 0x0806},
		{Destination: testPeerMAC, Source: make(net.HardwareAddr, 8), EtherType: 0x0806},
	} {
		if b, err := f.MarshalBinary(); err == nil {
			t.Errorf("MarshalBinary(%v -> %v) = % x, want error", f.Source, f.Destination, b)
		}
	}
	for _, n := range []int{0, 1, 13} {
		var f ethernetFrame
		if err := f.UnmarshalBinary(make([]byte, n)); err == nil {
			t.Errorf("UnmarshalBinary(%d bytes) = %+v, want error", n, f)
		}
	}
	// A bare header is a valid frame with an empty payload.
	var f ethernetFrame
	if err := f.UnmarshalBinary(ethARPBroadcastHeader); err != nil {
		t.Fatalf("UnmarshalBinary(header only): %v", err)
	}
	if len(f.Payload) != 0 || f.EtherType != 0x0806 || !bytes.Equal(f.Source, testNodeMAC) ||
		f.Destination.String() != "ff:ff:ff:ff:ff:ff" {
		t.Fatalf("UnmarshalBinary(header only) = %+v", f)
	}
}

// decodeARPFrame decodes an Ethernet frame carrying ARP, failing the test on
// anything else.
func decodeARPFrame(t *testing.T, b []byte) (ethernetFrame, arpPacket) {
	t.Helper()
	var f ethernetFrame
	if err := f.UnmarshalBinary(b); err != nil {
		t.Fatalf("ethernet: %v", err)
	}
	if f.EtherType != 0x0806 {
		t.Fatalf("EtherType %#04x, want ARP", f.EtherType)
	}
	var p arpPacket
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		t.Fatalf("arp: %v", err)
	}
	return f, p
}

func TestGratuitousARP(t *testing.T) {
	frames, err := gratuitousARP(testNodeMAC, testVIP)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 {
		t.Fatalf("got %d frames, want 2", len(frames))
	}
	wantReq := concat(ethARPBroadcastHeader, arpGratuitousRequestBytes, ethARPPadding)
	wantRep := concat(ethARPBroadcastHeader, arpGratuitousReplyBytes, ethARPPadding)
	if !bytes.Equal(frames[0], wantReq) {
		t.Errorf("request form:\n got % x\nwant % x", frames[0], wantReq)
	}
	if !bytes.Equal(frames[1], wantRep) {
		t.Errorf("reply form:\n got % x\nwant % x", frames[1], wantRep)
	}
	// Field by field.
	for i, wantOp := range []uint16{1, 2} {
		f, p := decodeARPFrame(t, frames[i])
		if len(frames[i]) != 60 {
			t.Errorf("frame %d is %d bytes, want 60", i, len(frames[i]))
		}
		if f.Destination.String() != "ff:ff:ff:ff:ff:ff" {
			t.Errorf("frame %d: destination %v, want broadcast", i, f.Destination)
		}
		if !bytes.Equal(f.Source, testNodeMAC) {
			t.Errorf("frame %d: source %v, want %v", i, f.Source, testNodeMAC)
		}
		if p.Operation != wantOp {
			t.Errorf("frame %d: op %d, want %d", i, p.Operation, wantOp)
		}
		if !bytes.Equal(p.SenderHardwareAddr, testNodeMAC) {
			t.Errorf("frame %d: sha %v, want %v", i, p.SenderHardwareAddr, testNodeMAC)
		}
		if p.SenderIP != testVIP || p.TargetIP != testVIP {
			t.Errorf("frame %d: spa %v tpa %v, want both %v", i, p.SenderIP, p.TargetIP, testVIP)
		}
		wantTHA := "00:00:00:00:00:00"
		if wantOp == 2 {
			wantTHA = testNodeMAC.String()
		}
		if p.TargetHardwareAddr.String() != wantTHA {
			t.Errorf("frame %d: tha %v, want %v", i, p.TargetHardwareAddr, wantTHA)
		}
	}

	for _, tc := range []struct {
		mac net.HardwareAddr
		ip  netip.Addr
	}{
		{testNodeMAC[:4], testVIP},
		{nil, testVIP},
		{testNodeMAC, netip.MustParseAddr("2001:db8::1")},
		{testNodeMAC, netip.Addr{}},
	} {
		if frames, err := gratuitousARP(tc.mac, tc.ip); err == nil {
			t.Errorf("gratuitousARP(%v, %v) = %x, want error", tc.mac, tc.ip, frames)
		}
	}
}

func TestARPProbe(t *testing.T) {
	frame, err := arpProbe(testNodeMAC, testVIP)
	if err != nil {
		t.Fatal(err)
	}
	want := concat(ethARPBroadcastHeader, arpProbeBytes, ethARPPadding)
	if !bytes.Equal(frame, want) {
		t.Errorf("probe:\n got % x\nwant % x", frame, want)
	}
	f, p := decodeARPFrame(t, frame)
	if f.Destination.String() != "ff:ff:ff:ff:ff:ff" {
		t.Errorf("destination %v, want broadcast", f.Destination)
	}
	if !bytes.Equal(f.Source, testNodeMAC) {
		t.Errorf("source %v, want %v", f.Source, testNodeMAC)
	}
	if p.Operation != 1 {
		t.Errorf("op %d, want 1 (request)", p.Operation)
	}
	if !bytes.Equal(p.SenderHardwareAddr, testNodeMAC) {
		t.Errorf("sha %v, want %v", p.SenderHardwareAddr, testNodeMAC)
	}
	if p.SenderIP != netip.MustParseAddr("0.0.0.0") {
		t.Errorf("spa %v, want 0.0.0.0", p.SenderIP)
	}
	if p.TargetHardwareAddr.String() != "00:00:00:00:00:00" {
		t.Errorf("tha %v, want zero", p.TargetHardwareAddr)
	}
	if p.TargetIP != testVIP {
		t.Errorf("tpa %v, want %v", p.TargetIP, testVIP)
	}

	for _, tc := range []struct {
		mac net.HardwareAddr
		ip  netip.Addr
	}{
		{testNodeMAC[:5], testVIP},
		{testNodeMAC, netip.MustParseAddr("2001:db8::1")},
		{testNodeMAC, netip.MustParseAddr("::ffff:192.0.2.100")},
		{testNodeMAC, netip.Addr{}},
	} {
		if frame, err := arpProbe(tc.mac, tc.ip); err == nil {
			t.Errorf("arpProbe(%v, %v) = % x, want error", tc.mac, tc.ip, frame)
		}
	}
}

// testARPFrame builds an Ethernet/ARP frame for tests.
func testARPFrame(t testing.TB, dst net.HardwareAddr, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	t.Helper()
	payload, err := (&arpPacket{op, sha, spa, tha, tpa}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := (&ethernetFrame{dst, sha, 0x0806, payload}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	testBroadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	testZeroMAC   = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	testZeroIP    = netip.MustParseAddr("0.0.0.0")
)

// claimCase is a frame that probe for testVIP must report (want != nil) or
// ignore (want == nil), seen by a node whose MAC is testNodeMAC.
type claimCase struct {
	name  string
	frame func(t testing.TB) []byte
	want  net.HardwareAddr
}

func claimCases() []claimCase {
	return []claimCase{
		{"gratuitous request from other", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 1, testOtherMAC, testVIP, testZeroMAC, testVIP)
		}, testOtherMAC},
		{"gratuitous reply from other", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 2, testOtherMAC, testVIP, testBroadcast, testVIP)
		}, testOtherMAC},
		{"unicast reply from owner", func(t testing.TB) []byte {
			return testARPFrame(t, testNodeMAC, 2, testOtherMAC, testVIP, testNodeMAC, testZeroIP)
		}, testOtherMAC},
		{"owner asks for someone", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 1, testOtherMAC, testVIP, testZeroMAC, testPeerIP)
		}, testOtherMAC},
		{"simultaneous probe from other", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 1, testOtherMAC, testZeroIP, testZeroMAC, testVIP)
		}, testOtherMAC},
		{"own gratuitous request reflected", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 1, testNodeMAC, testVIP, testZeroMAC, testVIP)
		}, nil},
		{"own probe reflected", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 1, testNodeMAC, testZeroIP, testZeroMAC, testVIP)
		}, nil},
		{"gratuitous request for other address", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 1, testOtherMAC, testOtherVIP, testZeroMAC, testOtherVIP)
		}, nil},
		{"probe for other address", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 1, testOtherMAC, testZeroIP, testZeroMAC, testOtherVIP)
		}, nil},
		{"someone asks who has the VIP", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 1, testOtherMAC, testPeerIP, testZeroMAC, testVIP)
		}, nil},
		{"reply to the VIP from someone else", func(t testing.TB) []byte {
			return testARPFrame(t, testNodeMAC, 2, testOtherMAC, testPeerIP, testNodeMAC, testVIP)
		}, nil},
		{"reply with target 0.0.0.0 for other address", func(t testing.TB) []byte {
			return testARPFrame(t, testNodeMAC, 2, testOtherMAC, testOtherVIP, testNodeMAC, testZeroIP)
		}, nil},
		{"RARP opcode with VIP", func(t testing.TB) []byte {
			return testARPFrame(t, testBroadcast, 3, testOtherMAC, testVIP, testZeroMAC, testVIP)
		}, nil},
	}
}

// TestClaimant checks probe's frame classification without sockets.
func TestClaimant(t *testing.T) {
	a := &announcer{name: "test0", mac: testNodeMAC}
	for _, tc := range claimCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := a.claimant(tc.frame(t), testVIP)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("claimant = %v, want %v", got, tc.want)
			}
		})
	}
	// Frames that are not Ethernet/IPv4 ARP.
	good := testARPFrame(t, testBroadcast, 1, testOtherMAC, testVIP, testZeroMAC, testVIP)
	if a.claimant(good, testVIP) == nil {
		t.Fatal("control frame not reported")
	}
	ipv4Type := bytes.Clone(good)
	ipv4Type[12], ipv4Type[13] = 0x08, 0x00
	badHType := bytes.Clone(good)
	badHType[14+1] = 6
	for name, b := range map[string][]byte{
		"short Ethernet": good[:10],
		"short ARP":      good[:14+27],
		"EtherType IPv4": ipv4Type,
		"htype 6":        badHType,
	} {
		if got := a.claimant(b, testVIP); got != nil {
			t.Errorf("%s: claimant = %v, want nil", name, got)
		}
	}
}

// ---- Root tests: everything happens inside namespaces joined by a veth. ----

// arpLink is a veth between a "node" namespace (vn0, testNodeMAC) and a
// "peer" namespace (vp0, testPeerMAC).
type arpLink struct {
	node, peer *lab.NS
}

func newARPLink(t *testing.T) *arpLink {
	t.Helper()
	lab.NeedRoot(t)
	l := &arpLink{node: lab.NewNS(t, "node"), peer: lab.NewNS(t, "peer")}
	lab.Veth(t, l.node, "vn0", l.peer, "vp0")
	l.node.IP(t, "link", "set", "dev", "vn0", "address", testNodeMAC.String())
	l.peer.IP(t, "link", "set", "dev", "vp0", "address", testPeerMAC.String())
	return l
}

// openAnnouncerIn opens an IPv4 announcer on name inside ns.
func openAnnouncerIn(t *testing.T, ns *lab.NS, name string) *announcer {
	t.Helper()
	return openAnnouncerFor(t, ns, name, false)
}

// openAnnouncerFor opens an announcer on name inside ns, dual-stack if ipv6.
func openAnnouncerFor(t *testing.T, ns *lab.NS, name string, ipv6 bool) *announcer {
	t.Helper()
	var a *announcer
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		a, err = openAnnouncer(ifi.Index, ifi.Name, ifi.HardwareAddr, ipv6)
		return err
	})
	if err != nil {
		t.Fatalf("open announcer on %s in %s: %v", name, ns.Name, err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close announcer: %v", err)
		}
	})
	return a
}

// rawARPSocket opens a plain AF_PACKET/ETH_P_ARP socket on name inside ns,
// to watch or inject frames independently of the code under test.
func rawARPSocket(t *testing.T, ns *lab.NS, name string) *packet.Conn {
	t.Helper()
	var c *packet.Conn
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		c, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
		return err
	})
	if err != nil {
		t.Fatalf("packet socket on %s in %s: %v", name, ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readARP reads ARP frames from c and hands each to fn until fn returns true.
// It fails the test if that has not happened within bound.
func readARP(t *testing.T, c *packet.Conn, bound time.Duration, fn func(f ethernetFrame, p arpPacket) bool) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(bound)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1600)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("expected ARP frames not seen within %v: %v", bound, err)
		}
		var f ethernetFrame
		var p arpPacket
		if f.UnmarshalBinary(buf[:n]) != nil || f.EtherType != 0x0806 || p.UnmarshalBinary(f.Payload) != nil {
			continue
		}
		if fn(f, p) {
			return
		}
	}
}

func TestAnnounceMovesNeighbour(t *testing.T) {
	l := newARPLink(t)
	wrongMAC := "02:00:00:00:00:99"
	l.peer.IP(t, "addr", "add", "192.0.2.1/24", "dev", "vp0")
	l.peer.IP(t, "neigh", "replace", testVIP.String(), "lladdr", wrongMAC, "dev", "vp0", "nud", "stale")
	if out := l.peer.IP(t, "neigh", "show", testVIP.String(), "dev", "vp0"); !strings.Contains(out, wrongMAC) {
		t.Fatalf("setup: peer neighbour entry %q does not have %s", out, wrongMAC)
	}

	sniff := rawARPSocket(t, l.peer, "vp0")
	a := openAnnouncerIn(t, l.node, "vn0")
	if !bytes.Equal(a.mac, testNodeMAC) {
		t.Fatalf("announcer MAC %v, want %v", a.mac, testNodeMAC)
	}
	if err := a.announce(testVIP); err != nil {
		t.Fatalf("announce: %v", err)
	}

	// (a) the peer received both forms, from the node's MAC.
	seen := map[uint16]bool{}
	readARP(t, sniff, 2*time.Second, func(f ethernetFrame, p arpPacket) bool {
		if p.SenderIP != testVIP {
			return false // unrelated ARP traffic
		}
		if f.Destination.String() != "ff:ff:ff:ff:ff:ff" {
			t.Errorf("op %d: destination %v, want broadcast", p.Operation, f.Destination)
		}
		if !bytes.Equal(f.Source, testNodeMAC) {
			t.Errorf("op %d: Ethernet source %v, want %v", p.Operation, f.Source, testNodeMAC)
		}
		if !bytes.Equal(p.SenderHardwareAddr, testNodeMAC) {
			t.Errorf("op %d: sender MAC %v, want %v", p.Operation, p.SenderHardwareAddr, testNodeMAC)
		}
		if p.TargetIP != testVIP {
			t.Errorf("op %d: target IP %v, want %v", p.Operation, p.TargetIP, testVIP)
		}
		switch p.Operation {
		case 1:
			if p.TargetHardwareAddr.String() != "00:00:00:00:00:00" {
				t.Errorf("request form: target MAC %v, want zero", p.TargetHardwareAddr)
			}
		case 2:
			if p.TargetHardwareAddr.String() != p.SenderHardwareAddr.String() {
				t.Errorf("reply form: target MAC %v, want the sender's", p.TargetHardwareAddr)
			}
		default:
			t.Errorf("unexpected op %d", p.Operation)
		}
		if seen[p.Operation] {
			t.Errorf("op %d received twice", p.Operation)
		}
		seen[p.Operation] = true
		return seen[1] && seen[2]
	})

	// (b) the peer's neighbour entry moved to the node's MAC.
	var out string
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		out = l.peer.IP(t, "neigh", "show", testVIP.String(), "dev", "vp0")
		if strings.Contains(out, testNodeMAC.String()) {
			return
		}
	}
	t.Fatalf("peer neighbour entry for %s is %q, want lladdr %s", testVIP, strings.TrimSpace(out), testNodeMAC)
}

func TestProbeSeesOwner(t *testing.T) {
	l := newARPLink(t)
	l.peer.IP(t, "addr", "add", "192.0.2.100/24", "dev", "vp0")
	a := openAnnouncerIn(t, l.node, "vn0")
	ctx := t.Context()

	// The peer's kernel answers the probe. The window is long, but probe
	// returns at the first answer.
	mac, err := a.probe(ctx, testVIP, 5*time.Second)
	if err != nil {
		t.Fatalf("probe with owner present: %v", err)
	}
	if !bytes.Equal(mac, testPeerMAC) {
		t.Fatalf("probe with owner present = %v, want %v", mac, testPeerMAC)
	}

	// Nobody holds the address any more; our own probe must not count.
	l.peer.IP(t, "addr", "del", "192.0.2.100/24", "dev", "vp0")
	mac, err = a.probe(ctx, testVIP, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("probe without owner: %v", err)
	}
	if mac != nil {
		t.Fatalf("probe without owner = %v, want nil", mac)
	}

	// The address is back: the kernel answers again (the announcer did not
	// stop working after an empty window).
	l.peer.IP(t, "addr", "add", "192.0.2.100/24", "dev", "vp0")
	mac, err = a.probe(ctx, testVIP, 5*time.Second)
	if err != nil || !bytes.Equal(mac, testPeerMAC) {
		t.Fatalf("probe with owner back = %v, %v; want %v", mac, err, testPeerMAC)
	}
}

// injector sends frame from the peer every few milliseconds until stopped.
func injector(t *testing.T, c *packet.Conn, frame []byte) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: testBroadcast}); err != nil {
				sendErr = err
				return
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		if sendErr != nil {
			t.Fatalf("injecting frame: %v", sendErr)
		}
	}
}

// TestProbeFrames injects ARP frames from the peer while the node probes, and
// checks which of them count as a claim on the VIP. The cases that must be
// reported show that injected frames do reach probe within its window, so the
// cases that must be ignored are not vacuous.
func TestProbeFrames(t *testing.T) {
	l := newARPLink(t)
	a := openAnnouncerIn(t, l.node, "vn0")
	inject := rawARPSocket(t, l.peer, "vp0")
	for _, tc := range claimCases() {
		t.Run(tc.name, func(t *testing.T) {
			stop := injector(t, inject, tc.frame(t))
			window := 300 * time.Millisecond
			if tc.want != nil {
				window = 5 * time.Second // returns at the first claim
			}
			mac, err := a.probe(t.Context(), testVIP, window)
			stop()
			if err != nil {
				t.Fatalf("probe: %v", err)
			}
			if !bytes.Equal(mac, tc.want) {
				t.Fatalf("probe = %v, want %v", mac, tc.want)
			}
		})
	}
}

// TestProbeIgnoresOwnFrames: our own announcements and probes, sent on the
// node's interface while probe listens, are not a claim. (Reflected copies of
// our frames arriving from the link are covered by TestProbeFrames.)
func TestProbeIgnoresOwnFrames(t *testing.T) {
	l := newARPLink(t)
	a := openAnnouncerIn(t, l.node, "vn0")
	other := openAnnouncerIn(t, l.node, "vn0") // same MAC, separate socket
	peerSniff := rawARPSocket(t, l.peer, "vp0")

	done := make(chan struct{})
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		for {
			if err := other.announce(testVIP); err != nil {
				sendErr = err
				return
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	mac, err := a.probe(t.Context(), testVIP, 300*time.Millisecond)
	close(done)
	wg.Wait()
	if sendErr != nil {
		t.Fatalf("announce: %v", sendErr)
	}
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	if mac != nil {
		t.Fatalf("probe = %v while only we announced, want nil", mac)
	}
	// Our frames really were on the wire: the peer saw an announcement and
	// the probe, both from our MAC.
	var sawAnnounce, sawProbe bool
	readARP(t, peerSniff, 2*time.Second, func(f ethernetFrame, p arpPacket) bool {
		if bytes.Equal(p.SenderHardwareAddr, testNodeMAC) && p.TargetIP == testVIP {
			switch p.SenderIP {
			case testVIP:
				sawAnnounce = true
			case testZeroIP:
				sawProbe = true
			}
		}
		return sawAnnounce && sawProbe
	})
}

// TestProbeDiscardsEarlierFrames: a claim that arrived before the probe was
// sent is history, not an answer.
func TestProbeDiscardsEarlierFrames(t *testing.T) {
	l := newARPLink(t)
	a := openAnnouncerIn(t, l.node, "vn0")
	nodeSniff := rawARPSocket(t, l.node, "vn0")
	inject := rawARPSocket(t, l.peer, "vp0")

	claim := testARPFrame(t, testBroadcast, 1, testOtherMAC, testVIP, testZeroMAC, testVIP)
	for range 3 {
		if _, err := inject.WriteTo(claim, &packet.Addr{HardwareAddr: testBroadcast}); err != nil {
			t.Fatal(err)
		}
	}
	// Once a separate socket on the node has all three, so has the
	// announcer's socket (both are bound to ARP on vn0).
	n := 0
	readARP(t, nodeSniff, 2*time.Second, func(f ethernetFrame, p arpPacket) bool {
		if bytes.Equal(p.SenderHardwareAddr, testOtherMAC) {
			n++
		}
		return n == 3
	})

	mac, err := a.probe(t.Context(), testVIP, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	if mac != nil {
		t.Fatalf("probe = %v from a claim queued before the probe, want nil", mac)
	}
}

// probeAsync runs probe in the background and waits for its result, failing
// the test if it has not returned within bound (the window is far longer, so
// only cancellation can end it in time).
func probeAsync(t *testing.T, a *announcer, ctx context.Context, window, bound time.Duration) (net.HardwareAddr, error) {
	t.Helper()
	type result struct {
		mac net.HardwareAddr
		err error
	}
	done := make(chan result, 1)
	go func() {
		mac, err := a.probe(ctx, testVIP, window)
		done <- result{mac, err}
	}()
	select {
	case r := <-done:
		return r.mac, r.err
	case <-time.After(bound):
		t.Fatalf("probe did not return within %v of a %v window after its context ended", bound, window)
		return nil, nil
	}
}

func TestProbeContext(t *testing.T) {
	l := newARPLink(t)
	a := openAnnouncerIn(t, l.node, "vn0")

	// Cancelled while listening: returns the context's error, not nil.
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	mac, err := probeAsync(t, a, ctx, time.Hour, 10*time.Second)
	if !errors.Is(err, context.Canceled) || mac != nil {
		t.Fatalf("probe cancelled while listening = %v, %v; want context.Canceled", mac, err)
	}

	// Already cancelled.
	mac, err = probeAsync(t, a, ctx, time.Hour, 10*time.Second)
	if !errors.Is(err, context.Canceled) || mac != nil {
		t.Fatalf("probe with cancelled context = %v, %v; want context.Canceled", mac, err)
	}

	// Context deadline before the window ends.
	dctx, dcancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer dcancel()
	mac, err = probeAsync(t, a, dctx, time.Hour, 10*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) || mac != nil {
		t.Fatalf("probe past context deadline = %v, %v; want context.DeadlineExceeded", mac, err)
	}

	// A cancellation does not leak into the next probe: with the owner
	// present it is still seen.
	l.peer.IP(t, "addr", "add", "192.0.2.100/24", "dev", "vp0")
	mac, err = a.probe(t.Context(), testVIP, 5*time.Second)
	if err != nil || !bytes.Equal(mac, testPeerMAC) {
		t.Fatalf("probe after cancellations = %v, %v; want %v", mac, err, testPeerMAC)
	}

	// A zero window means probing is disabled.
	mac, err = a.probe(t.Context(), testVIP, 0)
	if mac != nil || err != nil {
		t.Fatalf("probe with zero window = %v, %v; want nil, nil", mac, err)
	}
}

func TestAnnouncerErrors(t *testing.T) {
	l := newARPLink(t)
	err := l.node.Do(func() error {
		ifi, err := net.InterfaceByName("vn0")
		if err != nil {
			return err
		}
		if a, err := openAnnouncer(ifi.Index, ifi.Name, ifi.HardwareAddr[:5], false); err == nil {
			a.Close()
			t.Error("openAnnouncer with a 5-byte MAC succeeded")
		}
		if a, err := openAnnouncer(0, ifi.Name, ifi.HardwareAddr, false); err == nil {
			a.Close()
			t.Error("openAnnouncer with ifindex 0 succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	a := openAnnouncerIn(t, l.node, "vn0")
	v6 := netip.MustParseAddr("2001:db8::1")
	if err := a.announce(v6); err == nil || !strings.Contains(err.Error(), "vn0") {
		t.Fatalf("announce(%v) = %v, want an error naming vn0", v6, err)
	}
	if mac, err := a.probe(t.Context(), v6, time.Second); err == nil {
		t.Fatalf("probe(%v) = %v, nil; want error", v6, mac)
	}

	// Link down: sending fails, and the error says where.
	l.node.IP(t, "link", "set", "dev", "vn0", "down")
	err = a.announce(testVIP)
	if err == nil {
		t.Fatal("announce on a down link succeeded")
	}
	for _, s := range []string{"192.0.2.100", "vn0"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("announce error %q does not mention %s", err, s)
		}
	}
}
