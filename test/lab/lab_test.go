package lab

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The lab's own decoders, on bytes written out by hand from the layouts
// (no root needed).

func TestParseARP(t *testing.T) {
	frame := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, 0x08, 0x06, // Ethernet
		0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // Ethernet/IPv4, request
		0x02, 0x00, 0x5e, 0x00, 0x53, 0x01, 192, 0, 2, 100, // sender
		0, 0, 0, 0, 0, 0, 192, 0, 2, 100, // target
	}
	p, err := ParseARP(frame)
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr(VIP)
	if p.Op != 1 || p.SenderIP != vip || p.TargetIP != vip || p.SenderMAC.String() != "02:00:5e:00:53:01" {
		t.Fatalf("%+v", p)
	}
	if got := announcedBy(frame, false); got != "02:00:5e:00:53:01" {
		t.Fatalf("announcedBy: %q", got)
	}
	if _, err := ParseARP(frame[:30]); err == nil {
		t.Fatal("a short frame parsed")
	}
}

func TestParseNA(t *testing.T) {
	vip6 := netip.MustParseAddr(VIP6).As16()
	src := netip.MustParseAddr("fe80::1").As16()
	all := allNodes.As16()
	icmp := append([]byte{136, 0, 0, 0, 0x20, 0, 0, 0}, vip6[:]...)
	icmp = append(icmp, 2, 1, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x02) // target link-layer address
	ip := []byte{0x60, 0, 0, 0, 0, byte(len(icmp)), 58, 255}
	ip = append(append(append(ip, src[:]...), all[:]...), icmp...)
	frame := append([]byte{0x33, 0x33, 0, 0, 0, 1, 0x02, 0x00, 0x5e, 0x00, 0x53, 0x02, 0x86, 0xdd}, ip...)
	na, err := ParseNA(frame)
	if err != nil {
		t.Fatal(err)
	}
	if na.Target != netip.MustParseAddr(VIP6) || na.Flags != naOverride || na.Destination != allNodes || na.TargetMAC.String() != "02:00:5e:00:53:02" {
		t.Fatalf("%+v", na)
	}
	if got := announcedBy(frame, true); got != "02:00:5e:00:53:02" {
		t.Fatalf("announcedBy: %q", got)
	}
	frame[14+40+4] = 0 // no override flag: not an announcement
	if got := announcedBy(frame, true); got != "" {
		t.Fatalf("announcedBy without O: %q", got)
	}
}

func TestParseAddr(t *testing.T) {
	b := make([]byte, ifaddrmsgLen)
	b[0], b[1], b[2], b[3] = unix.AF_INET, 24, 0, unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(b[4:8], 7)
	ci := make([]byte, 16)
	binary.NativeEndian.PutUint32(ci[0:4], 0)
	binary.NativeEndian.PutUint32(ci[4:8], 2)
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.IFA_ADDRESS, []byte{192, 0, 2, 100})
	ae.Bytes(unix.IFA_LOCAL, []byte{192, 0, 2, 100})
	ae.Bytes(unix.IFA_CACHEINFO, ci)
	ae.Uint32(unix.IFA_FLAGS, unix.IFA_F_NODAD)
	attrs, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	a, err := parseAddr(append(b, attrs...))
	if err != nil {
		t.Fatal(err)
	}
	if a.IP != netip.MustParseAddr(VIP) || a.PrefixLen != 24 || a.Index != 7 || !a.HasLifetimes || a.Valid != 2 || a.Preferred != 0 || a.Flags != unix.IFA_F_NODAD || a.Forever() {
		t.Fatalf("%+v", a)
	}
}

func TestStrictContract(t *testing.T) {
	if got := StateFileName("/vipd/192.0.2.100"); got != "vipd_192.0.2.100.json" {
		t.Errorf("state file name %q", got)
	}
	ok := `{"version":"v","pid":1,"name":"n1","key":"/vipd/x","addresses":["192.0.2.100/32"],"interface":"eth0",` +
		`"state":"leader","state_since":"2026-01-01T00:00:00Z","healthy":true,"written":"2026-01-01T00:00:00Z","lease":"1f"}`
	if err := decodeStrict([]byte(ok), &StateRecord{}, stateRequired); err != nil {
		t.Errorf("a valid record: %v", err)
	}
	extra := strings.Replace(ok, `"lease"`, `"new_field":1,"lease"`, 1)
	if err := decodeStrict([]byte(extra), &StateRecord{}, stateRequired); err == nil {
		t.Error("an unknown field was accepted")
	}
	missing := strings.Replace(ok, `"healthy":true,`, ``, 1)
	if err := decodeStrict([]byte(missing), &StateRecord{}, stateRequired); err == nil {
		t.Error("a record without healthy was accepted")
	}
	if _, err := ParseStatus([]byte(`{"key":"/vipd/x","endpoints":[],"at":"2026-01-01T00:00:00Z","holder":{"name":"n1","rank":"r","healthy":true,"priority":0,"key":"k","lease":"1","lease_left_s":2,"since":"2026-01-01T00:00:00Z","held_ms":1,"last_heartbeat":"2026-01-01T00:00:00Z","heartbeat_age_ms":1,"stale":false},"candidates":[]}`)); err != nil {
		t.Errorf("a valid status: %v", err)
	}
}
