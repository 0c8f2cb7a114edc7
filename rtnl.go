package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// This file speaks rtnetlink directly: links (RTM_*LINK), addresses
// (RTM_*ADDR) and the multicast groups that report changes to both.

// addrMessage is an ifaddrmsg (rtnetlink(7)) with the attributes vipd uses.
type addrMessage struct {
	Family    uint8
	PrefixLen uint8
	Flags     uint8 // low 8 bits of the address flags; all of them are in ExtFlags
	Scope     uint8
	Index     uint32

	Address netip.Addr // IFA_ADDRESS
	Local   netip.Addr // IFA_LOCAL; the address itself for IPv4

	// IFA_CACHEINFO lifetimes, in seconds; 0xffffffff means permanent.
	// HasLifetimes says whether the attribute is present.
	HasLifetimes               bool
	Preferred, Valid           uint32
	ExtFlags                   uint32 // IFA_FLAGS
	cacheCreated, cacheUpdated uint32
}

const ifAddrMsgLen = 8

// MarshalBinary encodes the header and attributes in host byte order, as the
// kernel expects.
func (m *addrMessage) MarshalBinary() ([]byte, error) {
	b := make([]byte, ifAddrMsgLen)
	b[0], b[1], b[2], b[3] = m.Family, m.PrefixLen, m.Flags, m.Scope
	binary.NativeEndian.PutUint32(b[4:8], m.Index)

	ae := netlink.NewAttributeEncoder()
	if m.Local.IsValid() {
		ae.Bytes(unix.IFA_LOCAL, m.Local.AsSlice())
	}
	if m.Address.IsValid() {
		ae.Bytes(unix.IFA_ADDRESS, m.Address.AsSlice())
	}
	if m.HasLifetimes {
		ci := make([]byte, 16)
		binary.NativeEndian.PutUint32(ci[0:4], m.Preferred)
		binary.NativeEndian.PutUint32(ci[4:8], m.Valid)
		binary.NativeEndian.PutUint32(ci[8:12], m.cacheCreated)
		binary.NativeEndian.PutUint32(ci[12:16], m.cacheUpdated)
		ae.Bytes(unix.IFA_CACHEINFO, ci)
	}
	// The kernel takes the flags from the header when IFA_FLAGS is absent
	// (and UnmarshalBinary does too), so the attribute is needed only when
	// the two differ, even when ExtFlags is 0.
	if m.ExtFlags != uint32(m.Flags) {
		ae.Uint32(unix.IFA_FLAGS, m.ExtFlags)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(b, attrs...), nil
}

// UnmarshalBinary decodes an ifaddrmsg; unknown attributes are skipped.
func (m *addrMessage) UnmarshalBinary(b []byte) error {
	if len(b) < ifAddrMsgLen {
		return fmt.Errorf("ifaddrmsg: %d bytes, want at least %d", len(b), ifAddrMsgLen)
	}
	*m = addrMessage{
		Family: b[0], PrefixLen: b[1], Flags: b[2], Scope: b[3],
		Index:    binary.NativeEndian.Uint32(b[4:8]),
		ExtFlags: uint32(b[2]),
	}
	ad, err := netlink.NewAttributeDecoder(b[ifAddrMsgLen:])
	if err != nil {
		return err
	}
	// An IPv4 or IPv6 address attribute of the wrong length is malformed,
	// not absent: taking it for "no address" would make the message about
	// the other attribute's address. Other families' addresses are not
	// read (MCTP's are one byte): a dump that lists them must still work.
	size := map[uint8]int{unix.AF_INET: 4, unix.AF_INET6: 16}[m.Family]
	addr := func() netip.Addr {
		b := ad.Bytes()
		if size == 0 {
			return netip.Addr{}
		}
		if len(b) != size && err == nil {
			err = fmt.Errorf("ifaddrmsg: attribute %d is %d bytes, not an address of family %d", ad.Type(), len(b), m.Family)
			return netip.Addr{}
		}
		ip, _ := netip.AddrFromSlice(b)
		return ip
	}
	n := 0
	for err == nil && ad.Next() {
		n++
		switch ad.Type() {
		case unix.IFA_ADDRESS:
			m.Address = addr()
		case unix.IFA_LOCAL:
			m.Local = addr()
		case unix.IFA_FLAGS:
			m.ExtFlags = ad.Uint32()
		case unix.IFA_CACHEINFO:
			ad.Do(func(ci []byte) error {
				if len(ci) < 16 {
					return fmt.Errorf("IFA_CACHEINFO: %d bytes, want 16", len(ci))
				}
				m.HasLifetimes = true
				m.Preferred = binary.NativeEndian.Uint32(ci[0:4])
				m.Valid = binary.NativeEndian.Uint32(ci[4:8])
				m.cacheCreated = binary.NativeEndian.Uint32(ci[8:12])
				m.cacheUpdated = binary.NativeEndian.Uint32(ci[12:16])
				return nil
			})
		}
	}
	if err != nil {
		return err
	}
	if err := ad.Err(); err != nil {
		return err
	}
	// Len counts attributes whose length field is non-zero; Next also
	// yields the others, as empty attributes of their type.
	if n != ad.Len() {
		return errors.New("ifaddrmsg: attribute with length 0")
	}
	return nil
}

// ip is the address this message is about: IFA_LOCAL for IPv4 (IFA_ADDRESS is
// the peer on point-to-point links), IFA_ADDRESS for IPv6.
func (m *addrMessage) ip() netip.Addr {
	if m.Local.IsValid() {
		return m.Local
	}
	return m.Address
}

// prefix is the address with its prefix length.
func (m *addrMessage) prefix() netip.Prefix {
	return netip.PrefixFrom(m.ip(), int(m.PrefixLen))
}

// linkMessage is an ifinfomsg (rtnetlink(7)) with the attributes vipd uses.
type linkMessage struct {
	Family       uint8
	Type         uint16
	Index        uint32
	Flags        uint32
	Change       uint32
	Name         string           // IFLA_IFNAME
	HardwareAddr net.HardwareAddr // IFLA_ADDRESS
}

const ifInfoMsgLen = 16

// MarshalBinary encodes a link request (used for RTM_GETLINK), with every
// field UnmarshalBinary decodes, so that a decoded message re-encodes to the
// same value.
func (m *linkMessage) MarshalBinary() ([]byte, error) {
	b := make([]byte, ifInfoMsgLen)
	b[0] = m.Family
	binary.NativeEndian.PutUint16(b[2:4], m.Type)
	binary.NativeEndian.PutUint32(b[4:8], m.Index)
	binary.NativeEndian.PutUint32(b[8:12], m.Flags)
	binary.NativeEndian.PutUint32(b[12:16], m.Change)
	if m.Name == "" && m.HardwareAddr == nil {
		return b, nil
	}
	ae := netlink.NewAttributeEncoder()
	if m.Name != "" {
		ae.String(unix.IFLA_IFNAME, m.Name)
	}
	// nil means absent; an empty attribute decodes as empty, not nil.
	if m.HardwareAddr != nil {
		ae.Bytes(unix.IFLA_ADDRESS, m.HardwareAddr)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(b, attrs...), nil
}

// UnmarshalBinary decodes an ifinfomsg; unknown attributes are skipped.
func (m *linkMessage) UnmarshalBinary(b []byte) error {
	if len(b) < ifInfoMsgLen {
		return fmt.Errorf("ifinfomsg: %d bytes, want at least %d", len(b), ifInfoMsgLen)
	}
	*m = linkMessage{
		Family: b[0],
		Type:   binary.NativeEndian.Uint16(b[2:4]),
		Index:  binary.NativeEndian.Uint32(b[4:8]),
		Flags:  binary.NativeEndian.Uint32(b[8:12]),
		Change: binary.NativeEndian.Uint32(b[12:16]),
	}
	ad, err := netlink.NewAttributeDecoder(b[ifInfoMsgLen:])
	if err != nil {
		return err
	}
	n := 0
	for ad.Next() {
		n++
		switch ad.Type() {
		case unix.IFLA_IFNAME:
			// The kernel's own limit (IFNAMSIZ with the NUL); a longer name
			// is malformed, and one near 64 KiB cannot be re-encoded.
			if m.Name = ad.String(); len(m.Name) >= unix.IFNAMSIZ {
				return fmt.Errorf("ifinfomsg: IFLA_IFNAME is %d bytes, longer than IFNAMSIZ allows", len(m.Name))
			}
		case unix.IFLA_ADDRESS:
			// MAX_ADDR_LEN (include/linux/netdevice.h) bounds every link
			// type's hardware address.
			if m.HardwareAddr = net.HardwareAddr(ad.Bytes()); len(m.HardwareAddr) > 32 {
				return fmt.Errorf("ifinfomsg: IFLA_ADDRESS is %d bytes, longer than MAX_ADDR_LEN", len(m.HardwareAddr))
			}
		}
	}
	if err := ad.Err(); err != nil {
		return err
	}
	// The kernel's parser (nla_ok) stops at an attribute whose length
	// field is 0; netlink's decoder hands it out as an empty attribute of
	// its type, which would blank a name or address decoded before it.
	if n != ad.Len() {
		return errors.New("ifinfomsg: attribute with length 0")
	}
	return nil
}

// up says whether the link can carry frames: administratively up and with
// carrier (a veth whose peer is down, or an unplugged NIC, is not).
func (m *linkMessage) up() bool {
	return m.Flags&unix.IFF_UP != 0 && m.Flags&unix.IFF_RUNNING != 0
}

// rtnl is a request connection to rtnetlink.
type rtnl struct {
	c *netlink.Conn
}

// dialRTNL opens rtnetlink in the network namespace given by the open file
// descriptor netns (0: the caller's own).
func dialRTNL(netns int) (*rtnl, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink: %w", err)
	}
	return &rtnl{c: c}, nil
}

func (r *rtnl) Close() error { return r.c.Close() }

func (r *rtnl) execute(typ netlink.HeaderType, flags netlink.HeaderFlags, body []byte) ([]netlink.Message, error) {
	return r.c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | flags},
		Data:   body,
	})
}

// links lists every link in the namespace.
func (r *rtnl) links() ([]linkMessage, error) {
	req, _ := (&linkMessage{Family: unix.AF_UNSPEC}).MarshalBinary()
	msgs, err := r.execute(unix.RTM_GETLINK, netlink.Dump, req)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	links := make([]linkMessage, 0, len(msgs))
	for _, m := range msgs {
		var l linkMessage
		if err := l.UnmarshalBinary(m.Data); err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		links = append(links, l)
	}
	return links, nil
}

// addrs lists the addresses of one family (unix.AF_INET, AF_INET6 or
// AF_UNSPEC for both) on every link.
func (r *rtnl) addrs(family uint8) ([]addrMessage, error) {
	req, _ := (&addrMessage{Family: family}).MarshalBinary()
	msgs, err := r.execute(unix.RTM_GETADDR, netlink.Dump, req)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	addrs := make([]addrMessage, 0, len(msgs))
	for _, m := range msgs {
		var a addrMessage
		if err := a.UnmarshalBinary(m.Data); err != nil {
			return nil, fmt.Errorf("list addresses: %w", err)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// vipMessage is the ifaddrmsg that names one VIP on one link.
func vipMessage(index uint32, p netip.Prefix) *addrMessage {
	m := &addrMessage{
		Family:    unix.AF_INET,
		PrefixLen: uint8(p.Bits()),
		Index:     index,
		Address:   p.Addr(),
		Local:     p.Addr(),
	}
	if p.Addr().Is6() {
		m.Family = unix.AF_INET6
		m.Local = netip.Addr{}
		// The VIP moves between nodes: duplicate address detection would
		// hold it "tentative" (unusable) for a second or more on every move.
		m.ExtFlags = unix.IFA_F_NODAD
	}
	return m
}

// setAddr adds the VIP on the link, or replaces the lifetimes of the copy
// already there, so that the kernel removes it by itself after lifetime.
//
// The VIP is added deprecated (preferred_lft 0): the kernel then never picks
// it as the source of the holder's own new connections (IPv6 source address
// selection, RFC 6724 rule 3, would pick the /128 VIP over the node's own
// address otherwise), so they do not break, or answer to the next holder,
// when the VIP moves. A deprecated address still receives traffic and
// answers ARP and neighbour solicitations; valid_lft alone is the fence.
// kernel_test.go checks all of this.
func (r *rtnl) setAddr(index uint32, p netip.Prefix, lifetime time.Duration) error {
	secs := uint32(lifetime / time.Second)
	if secs < 1 {
		return fmt.Errorf("add %s on link %d: lifetime %v is below the kernel's 1 s granularity", p, index, lifetime)
	}
	m := vipMessage(index, p)
	m.HasLifetimes, m.Preferred, m.Valid = true, 0, secs
	body, err := m.MarshalBinary()
	if err != nil {
		return fmt.Errorf("add %s on link %d: %w", p, index, err)
	}
	if _, err := r.execute(unix.RTM_NEWADDR, netlink.Acknowledge|netlink.Create|netlink.Replace, body); err != nil {
		return fmt.Errorf("add %s on link %d: %w", p, index, err)
	}
	return nil
}

// delAddr removes the VIP from the link. It reports whether there was one to
// remove; an address that is already gone is not an error.
func (r *rtnl) delAddr(index uint32, p netip.Prefix) (bool, error) {
	body, err := vipMessage(index, p).MarshalBinary()
	if err != nil {
		return false, fmt.Errorf("remove %s from link %d: %w", p, index, err)
	}
	_, err = r.execute(unix.RTM_DELADDR, netlink.Acknowledge, body)
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove %s from link %d: %w", p, index, err)
	}
	return true, nil
}

// rtnlEvent is one change reported by the kernel. Exactly one of link, addr
// and resync is set.
type rtnlEvent struct {
	deleted bool // RTM_DELLINK or RTM_DELADDR
	link    *linkMessage
	addr    *addrMessage
	// resync: events were lost (the socket buffer overflowed); the receiver
	// must list links and addresses again.
	resync bool
	err    error // the watch failed and has stopped
}

// rtnlWatch subscribes to link and address changes.
type rtnlWatch struct {
	c *netlink.Conn
}

func watchRTNL(netns int) (*rtnlWatch, error) {
	groups := uint32(unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR)
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netns, Groups: groups})
	if err != nil {
		return nil, fmt.Errorf("subscribe to rtnetlink events: %w", err)
	}
	return &rtnlWatch{c: c}, nil
}

func (w *rtnlWatch) Close() error { return w.c.Close() }

// run sends every event to out until the connection is closed.
func (w *rtnlWatch) run(out chan<- rtnlEvent) {
	for {
		msgs, err := w.c.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			out <- rtnlEvent{resync: true}
			continue
		}
		if err != nil {
			out <- rtnlEvent{err: fmt.Errorf("receive rtnetlink events: %w", err)}
			return
		}
		for _, m := range msgs {
			if ev, ok := decodeEvent(m); ok {
				out <- ev
			}
		}
	}
}

func decodeEvent(m netlink.Message) (rtnlEvent, bool) {
	switch m.Header.Type {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		var l linkMessage
		if l.UnmarshalBinary(m.Data) != nil {
			return rtnlEvent{}, false
		}
		return rtnlEvent{link: &l, deleted: m.Header.Type == unix.RTM_DELLINK}, true
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		var a addrMessage
		if a.UnmarshalBinary(m.Data) != nil {
			return rtnlEvent{}, false
		}
		return rtnlEvent{addr: &a, deleted: m.Header.Type == unix.RTM_DELADDR}, true
	}
	return rtnlEvent{}, false
}

// findLink picks the link vipd works on: the one named, or for "auto" the
// one with an address (other than the VIP) whose subnet contains the VIP.
func findLink(links []linkMessage, addrs []addrMessage, name string, vip netip.Addr) (linkMessage, bool) {
	if name != "auto" {
		for _, l := range links {
			if l.Name == name {
				return l, true
			}
		}
		return linkMessage{}, false
	}
	for _, a := range addrs {
		p := a.prefix()
		if p.Addr() == vip || !p.Contains(vip) || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		for _, l := range links {
			if l.Index == a.Index {
				return l, true
			}
		}
	}
	return linkMessage{}, false
}
