package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The lab's own reader of a node's kernel fence. vipd attaches an eBPF
// program to its VIP interface's egress that drops every frame speaking
// for the VIP once CLOCK_MONOTONIC passes a deadline kept in a BPF map.
// A node whose vipd was killed or frozen can therefore keep the address
// for a second or two (lifetimes are whole seconds) without being able to
// speak for it, and another node may take the VIP meanwhile. To judge
// that, the monitor needs the deadline as the kernel sees it: it finds
// the filter with an RTM_GETTFILTER dump in the node's namespace, and the
// program's map through bpf(2) by ids. Like the rest of the oracle, this
// shares no code with vipd (bpffence.go): only the contract, which is the
// filter's place and name and the map's layout.

// The fence's contract with vipd: where its filter sits and what the map
// holds.
const (
	fencePref   = 0xbeef       // the filter's preference (tc's "prio")
	fenceName   = "vipd_fence" // its TCA_BPF_NAME
	fenceParent = 0xfffffff3   // TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)
	fenceKind   = "bpf"        // cls_bpf

	tcmsgLen   = 20 // struct tcmsg: family, pad1: u8; pad2: u16; ifindex: s32; handle, parent, info: u32
	tcaKind    = 1  // TCA_KIND
	tcaOptions = 2  // TCA_OPTIONS
	tcaBPFName = 7  // TCA_BPF_NAME, inside TCA_OPTIONS
	tcaBPFID   = 11 // TCA_BPF_ID, inside TCA_OPTIONS (not TCA_CHAIN, also 11, outside)
)

// ethPAllBE is ETH_P_ALL as tcm_info carries it (network order in the low
// 16 bits of a host-order word).
var ethPAllBE = uint32(unix.ETH_P_ALL>>8 | unix.ETH_P_ALL<<8&0xff00)

// Fence is a node's kernel fence as read at one moment.
type Fence struct {
	Found    bool   // our filter is on the interface's egress
	ProgID   uint32 // its program's id, when Found
	Deadline int64  // CLOCK_MONOTONIC ns past which the VIP's frames are dropped; 0: closed
	Now      int64  // CLOCK_MONOTONIC ns, read just before the deadline
}

// Passes says whether frames for the VIP get out: there is no fence, or
// its deadline is still ahead.
func (f Fence) Passes() bool { return !f.Found || f.Deadline > f.Now }

// Left is how long the fence stays open after Now (negative: how long ago
// it closed; meaningless for a deadline of 0).
func (f Fence) Left() time.Duration { return time.Duration(f.Deadline - f.Now) }

func (f Fence) String() string {
	switch {
	case !f.Found:
		return "no kernel fence"
	case f.Deadline == 0:
		return "fence closed"
	case f.Passes():
		return fmt.Sprintf("fence open %v more", f.Left().Round(time.Millisecond))
	default:
		return fmt.Sprintf("fence closed %v ago", (-f.Left()).Round(time.Millisecond))
	}
}

// FenceReader reads the kernel fence of one namespace. It keeps the
// program's and the map's descriptors for the program id it last found:
// while it holds the program, that id cannot name another program, so
// the map stays the right one, and a read costs one dump and one lookup.
// Not safe for concurrent use.
type FenceReader struct {
	o      *Observer
	progID uint32
	progFD int // -1: none
	mapFD  int // -1: none
}

// NewFenceReader opens an rtnetlink socket in ns for reading its fence.
// bpf(2) needs no namespace: program and map ids are global.
func NewFenceReader(ns *NS) (*FenceReader, error) {
	o, err := ns.Dial()
	if err != nil {
		return nil, fmt.Errorf("fence reader in %s: %w", ns.Name, err)
	}
	return &FenceReader{o: o, progFD: -1, mapFD: -1}, nil
}

// Read returns the fence on ifindex's egress: Found false when our filter
// is not there (then the descriptors of an earlier one are closed).
func (r *FenceReader) Read(ifindex uint32) (Fence, error) {
	if r.o == nil {
		return Fence{}, errors.New("read the fence: reader closed")
	}
	id, err := r.findFilter(ifindex)
	if err != nil {
		return Fence{}, err
	}
	if id == 0 {
		r.release()
		return Fence{}, nil
	}
	if id != r.progID {
		r.release()
		if err := r.open(id); err != nil {
			return Fence{}, err
		}
	}
	// The clock is read before the map, so that a deadline moved forward
	// in between only makes the fence look more open: the monitor errs on
	// the side of counting a node as speaking.
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return Fence{}, fmt.Errorf("read the fence: CLOCK_MONOTONIC: %w", err)
	}
	d, err := lookupDeadline(r.mapFD)
	if err != nil {
		return Fence{}, fmt.Errorf("read the fence of program %d: %w", id, err)
	}
	return Fence{Found: true, ProgID: id, Deadline: d, Now: ts.Nano()}, nil
}

// Close closes the socket and the cached descriptors.
func (r *FenceReader) Close() error {
	r.release()
	if r.o == nil {
		return nil
	}
	err := r.o.Close()
	r.o = nil
	return err
}

// findFilter dumps the filters at our preference and protocol on
// ifindex's egress and returns the program id of the first of ours (0:
// none). The first is the one that counts: cls_bpf stops at the first
// direct-action verdict of a preference.
func (r *FenceReader) findFilter(ifindex uint32) (uint32, error) {
	req := make([]byte, tcmsgLen)
	req[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(req[4:], ifindex)
	binary.NativeEndian.PutUint32(req[12:], fenceParent)
	binary.NativeEndian.PutUint32(req[16:], fencePref<<16|ethPAllBE) // the kernel dumps only these
	msgs, err := r.o.dump(unix.RTM_GETTFILTER, req)
	if err != nil {
		// No clsact qdisc or no such interface give an empty dump on
		// today's kernels, but some have answered with an error.
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV) {
			return 0, nil
		}
		return 0, fmt.Errorf("list the egress filters of interface %d: %w", ifindex, err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWTFILTER {
			continue
		}
		id, ok, err := parseFenceFilter(m.Data, ifindex)
		if err != nil {
			return 0, fmt.Errorf("egress filters of interface %d: %w", ifindex, err)
		}
		if ok {
			return id, nil
		}
	}
	return 0, nil
}

// parseFenceFilter decodes one RTM_NEWTFILTER body: ok when it is our
// filter (place, kind, name) with a program id. The dump also sends one
// message per preference with no options (the filter chain's head): not
// ok.
func parseFenceFilter(b []byte, ifindex uint32) (id uint32, ok bool, err error) {
	if len(b) < tcmsgLen {
		return 0, false, fmt.Errorf("tcmsg: %d bytes", len(b))
	}
	if binary.NativeEndian.Uint32(b[4:]) != ifindex || binary.NativeEndian.Uint32(b[12:]) != fenceParent ||
		binary.NativeEndian.Uint32(b[16:]) != fencePref<<16|ethPAllBE {
		return 0, false, nil // older kernels may not filter the dump
	}
	ad, err := netlink.NewAttributeDecoder(b[tcmsgLen:])
	if err != nil {
		return 0, false, err
	}
	var kind, name string
	for ad.Next() {
		switch ad.Type() {
		case tcaKind:
			kind = ad.String()
		case tcaOptions:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					switch nad.Type() {
					case tcaBPFID:
						id = nad.Uint32()
					case tcaBPFName:
						name = nad.String()
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return 0, false, err
	}
	return id, kind == fenceKind && name == fenceName && id != 0, nil
}

// open takes descriptors of program id and of its deadline map.
func (r *FenceReader) open(id uint32) error {
	progFD, err := bpfGetFDByID(unix.BPF_PROG_GET_FD_BY_ID, id)
	if err != nil {
		return fmt.Errorf("open fence program %d: %w", id, err)
	}
	mapFD, err := deadlineMap(progFD)
	if err != nil {
		unix.Close(progFD)
		return fmt.Errorf("fence program %d: %w", id, err)
	}
	r.progID, r.progFD, r.mapFD = id, progFD, mapFD
	return nil
}

// release closes the cached descriptors.
func (r *FenceReader) release() {
	for _, fd := range []*int{&r.progFD, &r.mapFD} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	r.progID = 0
}

// bpf(2) attributes (union bpf_attr) for the commands used here.
type (
	bpfGetIDAttr struct{ id, nextID, openFlags uint32 }
	bpfInfoAttr  struct {
		fd, infoLen uint32
		info        uint64
	}
	bpfElemAttr struct {
		mapFD uint32
		_     uint32
		key   uint64
		value uint64
		flags uint64
	}
	// bpfProgInfo is struct bpf_prog_info up to map_ids: the kernel fills
	// only the length it is given.
	bpfProgInfo struct {
		typ, id                 uint32
		tag                     [8]byte
		jitedLen, xlatedLen     uint32
		jitedInsns, xlatedInsns uint64
		loadTime                uint64
		createdByUID, nrMapIDs  uint32
		mapIDs                  uint64
	}
	// bpfMapInfo is struct bpf_map_info up to max_entries.
	bpfMapInfo struct{ typ, id, keySize, valueSize, maxEntries uint32 }
)

func bpfCall(cmd uintptr, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, cmd, uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// bpfGetFDByID opens a program or map by id (cmd BPF_PROG_GET_FD_BY_ID or
// BPF_MAP_GET_FD_BY_ID), close-on-exec as every bpf(2) fd is.
func bpfGetFDByID(cmd uintptr, id uint32) (int, error) {
	a := bpfGetIDAttr{id: id}
	if cmd == unix.BPF_MAP_GET_FD_BY_ID {
		a.openFlags = unix.BPF_F_RDONLY // the lab only looks
	}
	return bpfCall(cmd, unsafe.Pointer(&a), unsafe.Sizeof(a))
}

func bpfInfo(fd int, info unsafe.Pointer, size uintptr) error {
	a := bpfInfoAttr{fd: uint32(fd), infoLen: uint32(size), info: uint64(uintptr(info))}
	_, err := bpfCall(unix.BPF_OBJ_GET_INFO_BY_FD, unsafe.Pointer(&a), unsafe.Sizeof(a))
	return err
}

// deadlineMap opens the map the program references that has the fence's
// layout (an array of one u64 at a u32 key).
func deadlineMap(progFD int) (int, error) {
	ids := make([]uint32, 8)
	info := bpfProgInfo{nrMapIDs: uint32(len(ids)), mapIDs: uint64(uintptr(unsafe.Pointer(&ids[0])))}
	err := bpfInfo(progFD, unsafe.Pointer(&info), unsafe.Sizeof(info))
	runtime.KeepAlive(ids)
	if err != nil {
		return -1, fmt.Errorf("program info: %w", err)
	}
	for _, id := range ids[:min(int(info.nrMapIDs), len(ids))] {
		fd, err := bpfGetFDByID(unix.BPF_MAP_GET_FD_BY_ID, id)
		if err != nil {
			return -1, fmt.Errorf("open map %d: %w", id, err)
		}
		var mi bpfMapInfo
		if err := bpfInfo(fd, unsafe.Pointer(&mi), unsafe.Sizeof(mi)); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("map %d info: %w", id, err)
		}
		if mi.typ == unix.BPF_MAP_TYPE_ARRAY && mi.keySize == 4 && mi.valueSize == 8 && mi.maxEntries >= 1 {
			return fd, nil
		}
		unix.Close(fd)
	}
	return -1, fmt.Errorf("no deadline map among its %d maps", info.nrMapIDs)
}

// lookupDeadline reads key 0 of the deadline map.
func lookupDeadline(mapFD int) (int64, error) {
	var key uint32
	var value uint64
	a := bpfElemAttr{mapFD: uint32(mapFD), key: uint64(uintptr(unsafe.Pointer(&key))), value: uint64(uintptr(unsafe.Pointer(&value)))}
	_, err := bpfCall(unix.BPF_MAP_LOOKUP_ELEM, unsafe.Pointer(&a), unsafe.Sizeof(a))
	runtime.KeepAlive(&key)
	runtime.KeepAlive(&value)
	if err != nil {
		return 0, fmt.Errorf("look up the deadline: %w", err)
	}
	return int64(value), nil
}
