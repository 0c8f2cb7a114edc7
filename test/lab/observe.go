package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The lab's own view of the kernel: addresses, links and neighbours over
// rtnetlink, decoded here from the kernel's UAPI layouts (if_addr.h,
// if_link.h, rtnetlink.h, neighbour.h) and not with vipd's decoders, so
// that the oracle does not share the code it judges.

// Fixed header sizes (struct ifaddrmsg, ifinfomsg, ndmsg).
const (
	ifaddrmsgLen = 8  // family, prefixlen, flags, scope: u8; index: u32
	ifinfomsgLen = 16 // family, pad: u8; type: u16; index: s32; flags, change: u32
	ndmsgLen     = 12 // family, pad1: u8; pad2: u16; ifindex: s32; state: u16; flags, type: u8
	forever      = 0xffffffff
)

// Addr is one address of an interface as the kernel reports it.
type Addr struct {
	Family    uint8
	PrefixLen uint8
	Scope     uint8
	Flags     uint32 // IFA_FLAGS when present, else ifa_flags
	Index     uint32
	IP        netip.Addr // IFA_LOCAL when present (IPv4), else IFA_ADDRESS
	// HasLifetimes says whether IFA_CACHEINFO came with the message;
	// Preferred and Valid are its lifetimes in seconds (forever: 0xffffffff).
	HasLifetimes     bool
	Preferred, Valid uint32
}

// Prefix is the address with its prefix length.
func (a Addr) Prefix() netip.Prefix { return netip.PrefixFrom(a.IP, int(a.PrefixLen)) }

// Forever says whether the address has no valid lifetime.
func (a Addr) Forever() bool { return !a.HasLifetimes || a.Valid == forever }

// Link is one interface.
type Link struct {
	Index uint32
	Name  string
	Flags uint32 // IFF_*
	MAC   net.HardwareAddr
}

// Neighbour is one neighbour table entry.
type Neighbour struct {
	Index uint32
	IP    netip.Addr
	MAC   string // "" when the entry has no link-layer address (INCOMPLETE, FAILED)
	State uint16 // NUD_*
}

// parseAddr decodes an RTM_NEWADDR/RTM_DELADDR body.
func parseAddr(b []byte) (Addr, error) {
	if len(b) < ifaddrmsgLen {
		return Addr{}, fmt.Errorf("ifaddrmsg: %d bytes", len(b))
	}
	a := Addr{Family: b[0], PrefixLen: b[1], Flags: uint32(b[2]), Scope: b[3],
		Index: binary.NativeEndian.Uint32(b[4:8])}
	ad, err := netlink.NewAttributeDecoder(b[ifaddrmsgLen:])
	if err != nil {
		return Addr{}, err
	}
	var local, address netip.Addr
	for ad.Next() {
		switch ad.Type() {
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.IFA_FLAGS:
			a.Flags = ad.Uint32()
		case unix.IFA_CACHEINFO: // struct ifa_cacheinfo: prefered, valid, cstamp, tstamp
			if ci := ad.Bytes(); len(ci) >= 8 {
				a.HasLifetimes = true
				a.Preferred = binary.NativeEndian.Uint32(ci[0:4])
				a.Valid = binary.NativeEndian.Uint32(ci[4:8])
			}
		}
	}
	if err := ad.Err(); err != nil {
		return Addr{}, err
	}
	a.IP = address
	if local.IsValid() {
		a.IP = local
	}
	a.IP = a.IP.Unmap()
	return a, nil
}

// parseLink decodes an RTM_NEWLINK body.
func parseLink(b []byte) (Link, error) {
	if len(b) < ifinfomsgLen {
		return Link{}, fmt.Errorf("ifinfomsg: %d bytes", len(b))
	}
	l := Link{Index: binary.NativeEndian.Uint32(b[4:8]), Flags: binary.NativeEndian.Uint32(b[8:12])}
	ad, err := netlink.NewAttributeDecoder(b[ifinfomsgLen:])
	if err != nil {
		return Link{}, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.IFLA_IFNAME:
			l.Name = ad.String()
		case unix.IFLA_ADDRESS:
			l.MAC = net.HardwareAddr(append([]byte(nil), ad.Bytes()...))
		}
	}
	return l, ad.Err()
}

// parseNeighbour decodes an RTM_NEWNEIGH body.
func parseNeighbour(b []byte) (Neighbour, error) {
	if len(b) < ndmsgLen {
		return Neighbour{}, fmt.Errorf("ndmsg: %d bytes", len(b))
	}
	n := Neighbour{Index: binary.NativeEndian.Uint32(b[4:8]), State: binary.NativeEndian.Uint16(b[8:10])}
	ad, err := netlink.NewAttributeDecoder(b[ndmsgLen:])
	if err != nil {
		return Neighbour{}, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NDA_DST:
			n.IP, _ = netip.AddrFromSlice(ad.Bytes())
			n.IP = n.IP.Unmap()
		case unix.NDA_LLADDR:
			n.MAC = net.HardwareAddr(append([]byte(nil), ad.Bytes()...)).String()
		}
	}
	return n, ad.Err()
}

// Observer is an rtnetlink connection inside one namespace.
type Observer struct {
	c *netlink.Conn
}

// DialObserver opens an rtnetlink connection in the namespace whose file
// descriptor is netns.
func DialObserver(netns int) (*Observer, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink: %w", err)
	}
	return &Observer{c: c}, nil
}

// Dial opens an rtnetlink connection in the namespace (the namespace's
// file is needed only while the socket is made).
func (ns *NS) Dial() (*Observer, error) {
	f, err := os.Open(filepath.Join("/run/netns", ns.Name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return DialObserver(int(f.Fd()))
}

// Observe is DialObserver for ns, closed when the test ends.
func (ns *NS) Observe(t testing.TB) *Observer {
	t.Helper()
	o, err := ns.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func (o *Observer) Close() error { return o.c.Close() }

func (o *Observer) dump(typ uint16, body []byte) ([]netlink.Message, error) {
	return o.c.Execute(netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | netlink.Dump}, Data: body})
}

// Addrs lists every address of every interface, both families.
func (o *Observer) Addrs() ([]Addr, error) {
	msgs, err := o.dump(unix.RTM_GETADDR, make([]byte, ifaddrmsgLen))
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []Addr
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWADDR {
			continue
		}
		a, err := parseAddr(m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Links lists every interface.
func (o *Observer) Links() ([]Link, error) {
	msgs, err := o.dump(unix.RTM_GETLINK, make([]byte, ifinfomsgLen))
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []Link
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK {
			continue
		}
		l, err := parseLink(m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// LinkByName is the interface called name.
func (o *Observer) LinkByName(name string) (Link, error) {
	links, err := o.Links()
	if err != nil {
		return Link{}, err
	}
	for _, l := range links {
		if l.Name == name {
			return l, nil
		}
	}
	return Link{}, fmt.Errorf("no link %s", name)
}

// Neighbours dumps the neighbour table, both families.
func (o *Observer) Neighbours() ([]Neighbour, error) {
	msgs, err := o.dump(unix.RTM_GETNEIGH, make([]byte, ndmsgLen))
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	var out []Neighbour
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWNEIGH {
			continue
		}
		n, err := parseNeighbour(m.Data)
		if err != nil {
			return nil, err
		}
		if n.IP.IsValid() {
			out = append(out, n)
		}
	}
	return out, nil
}

// AddAddr adds p on the link permanently (no lifetime), replacing a copy
// that is there; IPv6 without duplicate address detection. DelAddr removes
// it. These are the background changes a DHCP client or a CNI plugin makes
// (the soak's churn), not the VIP.
func (o *Observer) AddAddr(index uint32, p netip.Prefix) error {
	_, err := o.c.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWADDR,
		Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Replace}, Data: addrBody(index, p)})
	return err
}

func (o *Observer) DelAddr(index uint32, p netip.Prefix) error {
	_, err := o.c.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_DELADDR,
		Flags: netlink.Request | netlink.Acknowledge}, Data: addrBody(index, p)})
	return err
}

func addrBody(index uint32, p netip.Prefix) []byte {
	b := make([]byte, ifaddrmsgLen)
	b[0], b[1] = unix.AF_INET, uint8(p.Bits())
	binary.NativeEndian.PutUint32(b[4:8], index)
	ae := netlink.NewAttributeEncoder()
	if p.Addr().Is6() {
		b[0], b[2] = unix.AF_INET6, unix.IFA_F_NODAD
	} else {
		ae.Bytes(unix.IFA_LOCAL, p.Addr().AsSlice())
	}
	ae.Bytes(unix.IFA_ADDRESS, p.Addr().AsSlice())
	attrs, _ := ae.Encode() // only fixed-size attributes: cannot fail
	return append(b, attrs...)
}

// AddrEvent is one address change: Deleted for RTM_DELADDR; or Overflow,
// when the socket's buffer overflowed and events were lost; or Err, after
// which no more events come.
type AddrEvent struct {
	Addr     Addr
	Deleted  bool
	Overflow bool
	Err      error
}

// AddrWatch receives the address events of one namespace.
type AddrWatch struct {
	c *netlink.Conn
}

// WatchAddrs subscribes to the IPv4 and IPv6 address events of a namespace.
func WatchAddrs(netns int) (*AddrWatch, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netns,
		Groups: unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR})
	if err != nil {
		return nil, fmt.Errorf("subscribe to address events: %w", err)
	}
	return &AddrWatch{c: c}, nil
}

func (w *AddrWatch) Close() error { return w.c.Close() }

// Run sends every event to events, in the kernel's order, until the
// connection fails or is closed; then it sends the error and closes events.
func (w *AddrWatch) Run(events chan<- AddrEvent) {
	defer close(events)
	for {
		msgs, err := w.c.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			events <- AddrEvent{Overflow: true}
			continue
		}
		if err != nil {
			events <- AddrEvent{Err: fmt.Errorf("receive address events: %w", err)}
			return
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_NEWADDR && m.Header.Type != unix.RTM_DELADDR {
				continue
			}
			a, err := parseAddr(m.Data)
			if err != nil {
				events <- AddrEvent{Err: err}
				return
			}
			events <- AddrEvent{Addr: a, Deleted: m.Header.Type == unix.RTM_DELADDR}
		}
	}
}
