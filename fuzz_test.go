package main

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Fuzz targets for every decoder of bytes that come from the LAN (where a
// host is not trusted) or from the kernel. A decoder target decodes, encodes
// what it decoded and decodes that again: the two values must be equal, and
// anything the decoder accepts must be encodable. The frame classifiers
// (claimant, ndpClaimant) are checked against the bytes themselves, read at
// fixed offsets from the RFCs rather than through the decoders under test.
// Seeds are real encodings made by the package's own builders.

// fuzzFrames are the frames vipd sends, and ARP frames it must classify.
func fuzzFrames(tb testing.TB) [][]byte {
	tb.Helper()
	must := func(b []byte, err error) []byte {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	garp, err := gratuitousARP(testNodeMAC, testVIP)
	if err != nil {
		tb.Fatal(err)
	}
	frames := append(garp,
		must(arpProbe(testNodeMAC, testVIP)),
		must(unsolicitedNA(testOtherMAC, ndpTestVIP)),
		must(ndpProbe(testOtherMAC, ndpTestVIP)),
	)
	for _, c := range claimCases() {
		frames = append(frames, c.frame(tb))
	}
	return frames
}

func fuzzNDPFrames(tb testing.TB) [][]byte {
	var out [][]byte
	for _, f := range fuzzFrames(tb) {
		if binary.BigEndian.Uint16(f[12:14]) == etherTypeIPv6 {
			out = append(out, f)
		}
	}
	return out
}

// roundTripFailed reports two decodings that should have been equal.
func roundTripFailed(t *testing.T, input, encoded []byte, first, second any) {
	t.Helper()
	t.Fatalf("decode → encode → decode changed the value\ninput   % x\nencoded % x\nfirst   %+v\nsecond  %+v",
		input, encoded, first, second)
}

func FuzzEthernetFrame(f *testing.F) {
	for _, b := range fuzzFrames(f) {
		f.Add(b)
		f.Add(b[:ethHeaderLen])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var first ethernetFrame
		if err := first.UnmarshalBinary(data); err != nil {
			if len(data) >= ethHeaderLen {
				t.Fatalf("%d-byte frame rejected: %v", len(data), err)
			}
			return
		}
		enc, err := first.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v, cannot encode it: %v", first, err)
		}
		var second ethernetFrame
		if err := second.UnmarshalBinary(enc); err != nil {
			t.Fatalf("own encoding % x rejected: %v", enc, err)
		}
		// Ethernet II has no length field: the padding of a short frame is
		// indistinguishable from payload, so the encoder's zero padding to 60
		// bytes legitimately lengthens the payload of a short input.
		want := first
		if n := ethMinFrameLen - ethHeaderLen; len(want.Payload) < n {
			want.Payload = append(bytes.Clone(want.Payload), make([]byte, n-len(want.Payload))...)
		}
		if !reflect.DeepEqual(want, second) {
			roundTripFailed(t, data, enc, want, second)
		}
		// Every input byte is a field or payload, so the encoding is the
		// input itself, padded.
		if !bytes.Equal(enc[:len(data)], data) || len(enc) != max(len(data), ethMinFrameLen) {
			t.Fatalf("encoding % x of input % x", enc, data)
		}
	})
}

func FuzzARPPacket(f *testing.F) {
	for _, b := range fuzzFrames(f) {
		f.Add(b[ethHeaderLen:])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var first arpPacket
		if err := first.UnmarshalBinary(data); err != nil {
			return
		}
		enc, err := first.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v, cannot encode it: %v", first, err)
		}
		var second arpPacket
		if err := second.UnmarshalBinary(enc); err != nil {
			t.Fatalf("own encoding % x rejected: %v", enc, err)
		}
		if !reflect.DeepEqual(first, second) {
			roundTripFailed(t, data, enc, first, second)
		}
		// The fixed fields were checked and every other byte is a field;
		// what follows the 28 bytes is Ethernet padding.
		if !bytes.Equal(enc, data[:arpPacketLen]) {
			t.Fatalf("encoding % x of input % x", enc, data)
		}
	})
}

func FuzzIPv6Header(f *testing.F) {
	for _, b := range fuzzNDPFrames(f) {
		f.Add(b[ethHeaderLen:])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var first ipv6Header
		if err := first.UnmarshalBinary(data); err != nil {
			return
		}
		enc, err := first.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v, cannot encode it: %v", first, err)
		}
		var second ipv6Header
		if err := second.UnmarshalBinary(enc); err != nil {
			t.Fatalf("own encoding % x rejected: %v", enc, err)
		}
		if !reflect.DeepEqual(first, second) {
			roundTripFailed(t, data, enc, first, second)
		}
		if !bytes.Equal(enc, data[:ipv6HeaderLen]) {
			t.Fatalf("encoding % x of input % x", enc, data)
		}
	})
}

func FuzzNDPMessage(f *testing.F) {
	for _, b := range fuzzNDPFrames(f) {
		f.Add(b[ethHeaderLen+ipv6HeaderLen:])
	}
	ns, err := (&ndpMessage{Type: icmpv6NeighSol, Target: ndpTestVIP, LinkLayerAddr: testOtherMAC}).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ns)
	// A nonce option (RFC 3971 type 14, 8 bytes) before the link-layer one.
	f.Add(append(ns[:ndpMessageLen:ndpMessageLen], append([]byte{14, 1, 1, 2, 3, 4, 5, 6}, ns[ndpMessageLen:]...)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		var first ndpMessage
		if err := first.UnmarshalBinary(data); err != nil {
			return
		}
		enc, err := first.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v, cannot encode it: %v", first, err)
		}
		var second ndpMessage
		if err := second.UnmarshalBinary(enc); err != nil {
			t.Fatalf("own encoding % x rejected: %v", enc, err)
		}
		// Options other than the one link-layer address are not part of
		// the value, so only the values are compared, not the bytes.
		if !reflect.DeepEqual(first, second) {
			roundTripFailed(t, data, enc, first, second)
		}
	})
}

// kernelAddrMessage is laid out as the kernel reports an IPv6 address
// (RTM_NEWADDR): header, IFA_ADDRESS, IFA_CACHEINFO, IFA_FLAGS and
// attributes vipd does not read (IFA_LABEL is IPv4-only; the fuzzer only
// needs an unknown type here).
func kernelAddrMessage(tb testing.TB) []byte {
	tb.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.IFA_ADDRESS, netip.MustParseAddr("2001:db8::7").AsSlice())
	ci := make([]byte, 16)
	binary.NativeEndian.PutUint32(ci[0:4], 0xffffffff)
	binary.NativeEndian.PutUint32(ci[4:8], 0xffffffff)
	binary.NativeEndian.PutUint32(ci[8:12], 1234)
	binary.NativeEndian.PutUint32(ci[12:16], 5678)
	ae.Bytes(unix.IFA_CACHEINFO, ci)
	ae.Uint32(unix.IFA_FLAGS, unix.IFA_F_PERMANENT|unix.IFA_F_NODAD)
	ae.String(unix.IFA_LABEL, "eth0")
	ae.Uint32(unix.IFA_RT_PRIORITY, 256)
	attrs, err := ae.Encode()
	if err != nil {
		tb.Fatal(err)
	}
	hdr := []byte{unix.AF_INET6, 64, unix.IFA_F_PERMANENT, unix.RT_SCOPE_UNIVERSE, 0, 0, 0, 0}
	binary.NativeEndian.PutUint32(hdr[4:8], 2)
	return append(hdr, attrs...)
}

// kernelLinkMessage is laid out as the kernel reports a link (RTM_NEWLINK),
// with attributes vipd does not read among those it does.
func kernelLinkMessage(tb testing.TB) []byte {
	tb.Helper()
	b, err := (&linkMessage{Type: unix.ARPHRD_ETHER, Index: 5, Flags: unix.IFF_UP | unix.IFF_RUNNING}).MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, "eth0")
	ae.Uint32(unix.IFLA_MTU, 1500)
	ae.Bytes(unix.IFLA_ADDRESS, testNodeMAC)
	ae.Bytes(unix.IFLA_BROADCAST, testBroadcast)
	ae.Uint8(unix.IFLA_OPERSTATE, 6)
	attrs, err := ae.Encode()
	if err != nil {
		tb.Fatal(err)
	}
	return append(b, attrs...)
}

func fuzzAddrMessages(tb testing.TB) [][]byte {
	tb.Helper()
	v4 := vipMessage(7, netip.MustParsePrefix("192.0.2.100/32"))
	v4.HasLifetimes, v4.Preferred, v4.Valid = true, 2, 3
	out := [][]byte{kernelAddrMessage(tb)}
	for _, m := range []*addrMessage{v4, vipMessage(3, netip.MustParsePrefix("2001:db8::1/128")), {Family: unix.AF_UNSPEC}} {
		b, err := m.MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func fuzzLinkMessages(tb testing.TB) [][]byte {
	tb.Helper()
	out := [][]byte{kernelLinkMessage(tb)}
	for _, m := range []*linkMessage{{Family: unix.AF_UNSPEC}, {Name: "eth0"}} {
		b, err := m.MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func FuzzAddrMessage(f *testing.F) {
	for _, b := range fuzzAddrMessages(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var first addrMessage
		if err := first.UnmarshalBinary(data); err != nil {
			return
		}
		enc, err := first.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v, cannot encode it: %v", first, err)
		}
		var second addrMessage
		if err := second.UnmarshalBinary(enc); err != nil {
			t.Fatalf("own encoding % x rejected: %v", enc, err)
		}
		// Attributes vipd does not read are not part of the value, and
		// IFA_FLAGS may be left out when the header's 8 bits say it all
		// (the kernel reads it that way too), so values are compared.
		if !reflect.DeepEqual(first, second) {
			roundTripFailed(t, data, enc, first, second)
		}
	})
}

func FuzzLinkMessage(f *testing.F) {
	for _, b := range fuzzLinkMessages(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var first linkMessage
		if err := first.UnmarshalBinary(data); err != nil {
			return
		}
		enc, err := first.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v, cannot encode it: %v", first, err)
		}
		var second linkMessage
		if err := second.UnmarshalBinary(enc); err != nil {
			t.Fatalf("own encoding % x rejected: %v", enc, err)
		}
		if !reflect.DeepEqual(first, second) {
			roundTripFailed(t, data, enc, first, second)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	for _, b := range fuzzLinkMessages(f) {
		f.Add(uint16(unix.RTM_NEWLINK), b)
		f.Add(uint16(unix.RTM_DELLINK), b)
	}
	for _, b := range fuzzAddrMessages(f) {
		f.Add(uint16(unix.RTM_NEWADDR), b)
		f.Add(uint16(unix.RTM_DELADDR), b)
	}
	f.Add(uint16(unix.RTM_NEWROUTE), kernelLinkMessage(f))
	f.Fuzz(func(t *testing.T, typ uint16, data []byte) {
		m := netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ)}, Data: data}
		ev, ok := decodeEvent(m)
		isLink := typ == unix.RTM_NEWLINK || typ == unix.RTM_DELLINK
		isAddr := typ == unix.RTM_NEWADDR || typ == unix.RTM_DELADDR
		if !ok {
			if !reflect.DeepEqual(ev, rtnlEvent{}) {
				t.Fatalf("type %d: not ok, but event %+v", typ, ev)
			}
			var l linkMessage
			var a addrMessage
			if isLink && l.UnmarshalBinary(data) == nil || isAddr && a.UnmarshalBinary(data) == nil {
				t.Fatalf("type %d: a message that decodes was dropped", typ)
			}
			return
		}
		if ev.resync || ev.err != nil || (ev.link == nil) == (ev.addr == nil) || ev.link != nil && !isLink || ev.addr != nil && !isAddr {
			t.Fatalf("type %d gave event %+v: want exactly one of link and addr, of the message's kind", typ, ev)
		}
		if ev.deleted != (typ == unix.RTM_DELLINK || typ == unix.RTM_DELADDR) {
			t.Fatalf("type %d gave deleted=%v", typ, ev.deleted)
		}
		var enc []byte
		var err error
		if ev.link != nil {
			enc, err = ev.link.MarshalBinary()
		} else {
			enc, err = ev.addr.MarshalBinary()
		}
		if err != nil {
			t.Fatalf("event %+v: cannot encode it: %v", ev, err)
		}
		again, ok := decodeEvent(netlink.Message{Header: m.Header, Data: enc})
		if !ok || !reflect.DeepEqual(ev, again) {
			t.Fatalf("decode → encode → decode changed the event\ninput % x\nfirst  %+v %+v %+v\nsecond %+v %+v %+v (ok %v)",
				data, ev, ev.link, ev.addr, again, again.link, again.addr, ok)
		}
	})
}

// FuzzARPClaimant holds claimant to a complete specification read from the
// bytes (RFC 826 layout, RFC 5227 probe): the sender MAC of an Ethernet/IPv4
// ARP request or reply, not ours, whose sender IP is the VIP, or of a probe
// (sender IP 0.0.0.0) for the VIP; nil for everything else.
func FuzzARPClaimant(f *testing.F) {
	for _, b := range fuzzFrames(f) {
		f.Add(b, []byte(testNodeMAC))
		f.Add(b, []byte(testOtherMAC))
	}
	vip := testVIP.As4()
	f.Fuzz(func(t *testing.T, frame, self []byte) {
		if len(self) != 6 {
			return // openAnnouncer refuses any other MAC
		}
		a := &announcer{name: "fuzz0", mac: net.HardwareAddr(self)}
		buf := bytes.Clone(frame)
		got := a.claimant(buf, testVIP)

		var want net.HardwareAddr
		if len(frame) >= ethHeaderLen+arpPacketLen &&
			bytes.Equal(frame[12:21], []byte{0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0}) &&
			(frame[21] == arpOpRequest || frame[21] == arpOpReply) &&
			!bytes.Equal(frame[22:28], self) &&
			(bytes.Equal(frame[28:32], vip[:]) ||
				frame[21] == arpOpRequest && bytes.Equal(frame[28:32], []byte{0, 0, 0, 0}) && bytes.Equal(frame[38:42], vip[:])) {
			want = net.HardwareAddr(frame[22:28])
		}
		if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
			t.Fatalf("claimant(% x) with self %v = %v, want %v", frame, net.HardwareAddr(self), got, want)
		}
		checkClaimantCopy(t, got, buf)
	})
}

// checkClaimantCopy checks that a claimant result does not alias buf, the
// frame it came from: probe reads every frame into the same buffer.
func checkClaimantCopy(t *testing.T, got net.HardwareAddr, buf []byte) {
	t.Helper()
	keep := bytes.Clone(got)
	for i := range buf {
		buf[i] = ^buf[i]
	}
	if !bytes.Equal(got, keep) {
		t.Fatalf("claimant result %v shares memory with the frame", keep)
	}
}

// FuzzNDPClaimant holds ndpClaimant to what RFC 4861 makes a claim: an
// Ethernet/IPv6 ICMPv6 packet with hop limit 255 and a valid checksum that
// is a Neighbor Advertisement for the VIP, or a Neighbor Solicitation for
// it from :: (duplicate address detection). The MAC it names is the
// frame's source or the advertisement's target link-layer address, 6 bytes,
// never ours; a frame from our own MAC names nobody. When fixChecksum is
// set, the fuzz target writes a valid checksum into the frame first, so that
// the fuzzer reaches past the checksum check.
func FuzzNDPClaimant(f *testing.F) {
	for _, b := range fuzzNDPFrames(f) {
		f.Add(b, []byte(testNodeMAC), false)
		f.Add(b, []byte(testNodeMAC), true)
		f.Add(b, []byte(testOtherMAC), false)
	}
	const icmpOff = ethHeaderLen + ipv6HeaderLen
	f.Fuzz(func(t *testing.T, frame, self []byte, fixChecksum bool) {
		if len(self) != 6 {
			return
		}
		plen := 0
		if len(frame) >= icmpOff {
			plen = int(binary.BigEndian.Uint16(frame[ethHeaderLen+4:]))
		}
		fits := len(frame) >= icmpOff+ndpMessageLen && plen >= ndpMessageLen && icmpOff+plen <= len(frame)
		src, dst := netip.Addr{}, netip.Addr{}
		if len(frame) >= icmpOff {
			src = netip.AddrFrom16([16]byte(frame[ethHeaderLen+8:]))
			dst = netip.AddrFrom16([16]byte(frame[ethHeaderLen+24:]))
		}
		if fixChecksum && fits {
			frame = bytes.Clone(frame) // the fuzzer's input is not ours to change
			msg := frame[icmpOff : icmpOff+plen]
			msg[2], msg[3] = 0, 0
			binary.BigEndian.PutUint16(msg[2:4], referenceChecksum(src, dst, msg))
		}
		buf := bytes.Clone(frame)
		got := ndpClaimant(buf, ndpTestVIP, net.HardwareAddr(self))
		if got == nil {
			return
		}
		fail := func(why string) {
			t.Helper()
			t.Fatalf("ndpClaimant(% x) with self %v = %v: %s", frame, net.HardwareAddr(self), got, why)
		}
		if len(got) != 6 {
			fail("not a 6-byte MAC")
		}
		if bytes.Equal(got, self) {
			fail("our own MAC")
		}
		if bytes.Equal(frame[6:12], self) {
			fail("the frame is our own")
		}
		if !fits || binary.BigEndian.Uint16(frame[12:14]) != etherTypeIPv6 || frame[ethHeaderLen]>>4 != 6 ||
			frame[ethHeaderLen+6] != protoICMPv6 || frame[ethHeaderLen+7] != 255 {
			fail("not an ICMPv6 packet with hop limit 255")
		}
		msg := frame[icmpOff : icmpOff+plen]
		if referenceChecksum(src, dst, msg) != 0 {
			fail("the checksum does not verify")
		}
		if msg[1] != 0 || !bytes.Equal(msg[8:24], ndpTestVIP.AsSlice()) {
			fail("not a neighbour message for the VIP")
		}
		switch {
		case msg[0] == icmpv6NeighSol && src == ipv6Unspecified:
			if !bytes.Equal(got, frame[6:12]) {
				fail("a probe names its Ethernet source")
			}
		case msg[0] == icmpv6NeighAdv:
			named := bytes.Equal(got, frame[6:12])
			for opts := msg[ndpMessageLen:]; len(opts) >= 8 && opts[1] > 0 && int(opts[1])*8 <= len(opts); opts = opts[int(opts[1])*8:] {
				named = named || opts[0] == ndpOptTargetLL && opts[1] == 1 && bytes.Equal(got, opts[2:8])
			}
			if !named {
				fail("an advertisement names its Ethernet source or a target link-layer option")
			}
		default:
			fail("neither an advertisement nor a solicitation from ::")
		}
		checkClaimantCopy(t, got, buf)
	})
}
