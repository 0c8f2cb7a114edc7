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
		ipFamily := first.Family == unix.AF_INET || first.Family == unix.AF_INET6
		checkAttrs(t, data[ifAddrMsgLen:], func(typ uint16, v []byte) string {
			switch {
			case !ipFamily && (typ == unix.IFA_ADDRESS || typ == unix.IFA_LOCAL):
				// Not read: another family's address (MCTP's is one byte).
				if first.Address.IsValid() || first.Local.IsValid() {
					return "address of a non-IP family"
				}
				return ""
			}
			switch typ {
			case unix.IFA_ADDRESS:
				if !bytes.Equal(first.Address.AsSlice(), v) {
					return "IFA_ADDRESS"
				}
			case unix.IFA_LOCAL:
				if !bytes.Equal(first.Local.AsSlice(), v) {
					return "IFA_LOCAL"
				}
			case unix.IFA_FLAGS:
				if len(v) != 4 || first.ExtFlags != binary.NativeEndian.Uint32(v) {
					return "IFA_FLAGS"
				}
			case unix.IFA_CACHEINFO:
				if len(v) < 16 || !first.HasLifetimes || first.Preferred != binary.NativeEndian.Uint32(v) ||
					first.Valid != binary.NativeEndian.Uint32(v[4:]) {
					return "IFA_CACHEINFO"
				}
			}
			return ""
		})
	})
}

// checkAttrs checks a decoded value against the attributes it came from,
// split by the netlink package rather than the decoder under test: for
// each type, the last attribute must be what the value holds (check returns
// the name of a field that does not match), so that no attribute the
// decoder reads is accepted and then lost or misread.
func checkAttrs(t *testing.T, b []byte, check func(typ uint16, v []byte) string) {
	t.Helper()
	attrs, err := netlink.UnmarshalAttributes(b)
	if err != nil {
		t.Fatalf("decoder accepted attributes % x that netlink rejects: %v", b, err)
	}
	last := map[uint16][]byte{}
	for _, a := range attrs {
		last[a.Type&^(netlink.Nested|netlink.NetByteOrder)] = a.Data
	}
	for typ, v := range last {
		if field := check(typ, v); field != "" {
			t.Fatalf("attribute %d (% x) accepted, but the value's %s does not hold it (attributes % x)", typ, v, field, b)
		}
	}
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
		checkAttrs(t, data[ifInfoMsgLen:], func(typ uint16, v []byte) string {
			switch typ {
			case unix.IFLA_IFNAME:
				if first.Name != string(bytes.TrimRight(v, "\x00")) || len(first.Name) >= unix.IFNAMSIZ {
					return "Name"
				}
			case unix.IFLA_ADDRESS:
				if !bytes.Equal(first.HardwareAddr, v) || len(v) > 32 {
					return "HardwareAddr"
				}
			}
			return ""
		})
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

// testNA builds a Neighbor Advertisement for ndpTestVIP from ethSrc whose
// options are opts, verbatim, with a valid checksum.
func testNA(tb testing.TB, ethSrc net.HardwareAddr, opts ...byte) []byte {
	tb.Helper()
	msg, err := (&ndpMessage{Type: icmpv6NeighAdv, Flags: naFlagOverride, Target: ndpTestVIP}).MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	msg = append(msg, opts...)
	binary.BigEndian.PutUint16(msg[2:4], icmpv6Checksum(ndpTestVIP, ipv6AllNodes, msg))
	hdr, err := (&ipv6Header{PayloadLength: uint16(len(msg)), NextHeader: protoICMPv6, HopLimit: ndpHopLimit,
		Source: ndpTestVIP, Destination: ipv6AllNodes}).MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	frame, err := (&ethernetFrame{Destination: multicastMAC(ipv6AllNodes), Source: ethSrc, EtherType: etherTypeIPv6,
		Payload: append(hdr, msg...)}).MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return frame
}

// testAttrs is an ifinfomsg or ifaddrmsg header followed by the
// given attributes.
func testAttrs(tb testing.TB, hdr []byte, attrs ...netlink.Attribute) []byte {
	tb.Helper()
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		tb.Fatal(err)
	}
	return append(bytes.Clone(hdr), b...)
}

// TestDecoderRegressions pins, one readable case each, the decoder bugs
// that the fuzz targets above found (their inputs are also kept under
// testdata/fuzz).
func TestDecoderRegressions(t *testing.T) {
	linkHdr := make([]byte, ifInfoMsgLen)
	addrHdr := []byte{unix.AF_INET, 24, 0, 0, 1, 0, 0, 0}
	mac := func(m net.HardwareAddr) []byte { return append([]byte{ndpOptTargetLL, 1}, m...) }

	t.Run("link hardware address re-encoded", func(t *testing.T) {
		var first, second linkMessage
		if err := first.UnmarshalBinary(kernelLinkMessage(t)); err != nil {
			t.Fatal(err)
		}
		enc, err := first.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := second.UnmarshalBinary(enc); err != nil || !bytes.Equal(second.HardwareAddr, testNodeMAC) {
			t.Fatalf("re-decoded %+v (%v), want hardware address %v", second, err, testNodeMAC)
		}
	})
	t.Run("link name lengths", func(t *testing.T) {
		for n, ok := range map[int]bool{unix.IFNAMSIZ - 1: true, unix.IFNAMSIZ: false, 0xffff - 4: false} {
			var l linkMessage
			err := l.UnmarshalBinary(testAttrs(t, linkHdr, netlink.Attribute{Type: unix.IFLA_IFNAME, Data: bytes.Repeat([]byte{'x'}, n)}))
			if (err == nil) != ok {
				t.Errorf("%d-byte IFLA_IFNAME: error %v, want accepted=%v", n, err, ok)
			}
			if err == nil {
				if _, err := l.MarshalBinary(); err != nil {
					t.Errorf("%d-byte IFLA_IFNAME decoded but not encoded: %v", n, err)
				}
			}
		}
	})
	t.Run("another family's address does not break a dump", func(t *testing.T) {
		// An MCTP address is one byte; a dump with AF_UNSPEC lists it
		// beside the IP addresses vipd looks for.
		var a addrMessage
		mctp := []byte{45 /* AF_MCTP */, 0, 0, 0, 1, 0, 0, 0}
		if err := a.UnmarshalBinary(testAttrs(t, mctp, netlink.Attribute{Type: unix.IFA_LOCAL, Data: []byte{8}})); err != nil {
			t.Fatalf("MCTP address rejected: %v", err)
		}
		if a.Local.IsValid() || a.Address.IsValid() {
			t.Fatalf("MCTP address read as an IP address: %+v", a)
		}
		if err := a.UnmarshalBinary(testAttrs(t, addrHdr, netlink.Attribute{Type: unix.IFA_LOCAL, Data: make([]byte, 16)})); err == nil {
			t.Fatal("AF_INET message with a 16-byte IFA_LOCAL accepted")
		}
	})
	t.Run("link address longer than MAX_ADDR_LEN", func(t *testing.T) {
		var l linkMessage
		if err := l.UnmarshalBinary(testAttrs(t, linkHdr, netlink.Attribute{Type: unix.IFLA_ADDRESS, Data: make([]byte, 33)})); err == nil {
			t.Fatal("33-byte IFLA_ADDRESS accepted")
		}
		if err := l.UnmarshalBinary(testAttrs(t, linkHdr, netlink.Attribute{Type: unix.IFLA_ADDRESS, Data: make([]byte, 20)})); err != nil {
			t.Fatalf("20-byte IFLA_ADDRESS (InfiniBand) rejected: %v", err)
		}
	})
	t.Run("attribute with length 0", func(t *testing.T) {
		zero := make([]byte, 4) // nla_len 0
		binary.NativeEndian.PutUint16(zero[2:], unix.IFLA_ADDRESS)
		var l linkMessage
		b := append(testAttrs(t, linkHdr, netlink.Attribute{Type: unix.IFLA_ADDRESS, Data: testNodeMAC}), zero...)
		if err := l.UnmarshalBinary(b); err == nil {
			t.Errorf("ifinfomsg accepted as %+v", l)
		}
		binary.NativeEndian.PutUint16(zero[2:], unix.IFA_LOCAL)
		var a addrMessage
		b = append(testAttrs(t, addrHdr, netlink.Attribute{Type: unix.IFA_LOCAL, Data: []byte{192, 0, 2, 1}}), zero...)
		if err := a.UnmarshalBinary(b); err == nil {
			t.Errorf("ifaddrmsg accepted as %+v", a)
		}
	})
	t.Run("address attribute of the wrong length", func(t *testing.T) {
		var a addrMessage
		b := testAttrs(t, addrHdr,
			netlink.Attribute{Type: unix.IFA_ADDRESS, Data: []byte{192, 0, 2, 1}},
			netlink.Attribute{Type: unix.IFA_LOCAL, Data: []byte{192, 0, 2, 7, 7}})
		if err := a.UnmarshalBinary(b); err == nil {
			t.Fatalf("5-byte IFA_LOCAL accepted as %+v (ip() %v)", a, a.ip())
		}
	})
	t.Run("IFA_FLAGS zero under non-zero header flags", func(t *testing.T) {
		hdr := bytes.Clone(addrHdr)
		hdr[2] = unix.IFA_F_PERMANENT
		var first, second addrMessage
		if err := first.UnmarshalBinary(testAttrs(t, hdr, netlink.Attribute{Type: unix.IFA_FLAGS, Data: make([]byte, 4)})); err != nil {
			t.Fatal(err)
		}
		enc, err := first.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := second.UnmarshalBinary(enc); err != nil || first.ExtFlags != 0 || second.ExtFlags != 0 {
			t.Fatalf("ExtFlags %#x, re-decoded %#x (%v), want 0 both", first.ExtFlags, second.ExtFlags, err)
		}
	})
	t.Run("IPv4-mapped addresses", func(t *testing.T) {
		na, err := unsolicitedNA(testOtherMAC, ndpTestVIP)
		if err != nil {
			t.Fatal(err)
		}
		mapped := netip.MustParseAddr("::ffff:192.0.2.1").As16()
		hdr := bytes.Clone(na[ethHeaderLen : ethHeaderLen+ipv6HeaderLen])
		copy(hdr[8:24], mapped[:])
		var h ipv6Header
		if err := h.UnmarshalBinary(hdr); err == nil {
			t.Errorf("IPv4-mapped source accepted: %+v", h)
		}
		msg := bytes.Clone(na[ethHeaderLen+ipv6HeaderLen:])
		copy(msg[8:24], mapped[:])
		var m ndpMessage
		if err := m.UnmarshalBinary(msg); err == nil {
			t.Errorf("IPv4-mapped target accepted: %+v", m)
		}
	})
	t.Run("first link-layer option counts", func(t *testing.T) {
		frame := testNA(t, testOtherMAC, append(mac(testOtherMAC), mac(testPeerMAC)...)...)
		var m ndpMessage
		if err := m.UnmarshalBinary(frame[ethHeaderLen+ipv6HeaderLen:]); err != nil || !bytes.Equal(m.LinkLayerAddr, testOtherMAC) {
			t.Fatalf("decoded %+v (%v), want link-layer address %v", m, err, testOtherMAC)
		}
	})
	t.Run("byte after the last option", func(t *testing.T) {
		frame := testNA(t, testOtherMAC, append(mac(testOtherMAC), 0)...)
		var m ndpMessage
		if err := m.UnmarshalBinary(frame[ethHeaderLen+ipv6HeaderLen:]); err == nil {
			t.Fatalf("accepted as %+v", m)
		}
	})
	t.Run("advertisement naming our MAC", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			frame []byte
			want  net.HardwareAddr
		}{
			{"from another source", testNA(t, testOtherMAC, mac(testNodeMAC)...), nil},
			{"ours after another host's", testNA(t, testOtherMAC, append(mac(testPeerMAC), mac(testNodeMAC)...)...), testPeerMAC},
			{"another host's after ours", testNA(t, testOtherMAC, append(mac(testNodeMAC), mac(testPeerMAC)...)...), nil},
		} {
			if got := ndpClaimant(tc.frame, ndpTestVIP, testNodeMAC); !bytes.Equal(got, tc.want) {
				t.Errorf("%s: ndpClaimant = %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}
