package main

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// capSet is a set of capabilities, bit n standing for capability n, as the
// kernel reports them in /proc/PID/status.
type capSet uint64

func (s capSet) has(c int) bool { return s&(1<<c) != 0 }

// daemonCaps is all the daemon loop needs: addresses (rtnetlink) and raw
// frames (AF_PACKET probes and announcements).
const daemonCaps capSet = 1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_NET_RAW

func capName(c int) string {
	switch c {
	case unix.CAP_NET_ADMIN:
		return "net_admin"
	case unix.CAP_NET_RAW:
		return "net_raw"
	case unix.CAP_SYS_ADMIN:
		return "sys_admin"
	}
	return fmt.Sprintf("cap_%d", c)
}

func (s capSet) String() string {
	if s == 0 {
		return "none"
	}
	var names []string
	for c := 0; c < 64; c++ {
		if !s.has(c) {
			continue
		}
		names = append(names, capName(c))
	}
	if len(names) > 4 {
		return fmt.Sprintf("%d capabilities", len(names))
	}
	return strings.Join(names, ",")
}

// capState is a thread's capability sets (ambient follows from them: the
// kernel clears an ambient capability that leaves permitted or inheritable).
type capState struct {
	eff, prm, inh capSet
}

// wantedCaps is what vipd keeps from cur once it runs. mounts says that the
// configuration comes from a partition: a SIGHUP re-exec mounts it again, so
// CAP_SYS_ADMIN stays permitted (as root with no_new_privs, execve grants at
// most the old permitted set) and inheritable (as another user it survives
// execve only as an ambient capability), but not effective. The result is
// never more than cur.
func wantedCaps(cur capState, mounts bool) (want capState, bounding capSet) {
	keep := daemonCaps
	if mounts {
		keep |= 1 << unix.CAP_SYS_ADMIN
	}
	return capState{eff: cur.eff & daemonCaps, prm: cur.prm & keep, inh: cur.inh & keep}, keep
}

// mountsConfig says whether the config source is a partition that has to
// be mounted (rather than nothing or a plain file).
func mountsConfig(source string) bool {
	if source == "" {
		return false
	}
	spec, err := parseConfigSpec(source)
	return err == nil && spec.file == ""
}

// dropPrivileges lowers vipd's capabilities to what the daemon loop needs
// and sets no_new_privs. It never stops vipd: one that cannot lower them
// (an unusual seccomp filter, say) runs on with a warning rather than
// crash-looping on every node at once.
func dropPrivileges(configSource string, log *logger) {
	kept, err := lowerPrivileges(mountsConfig(configSource))
	switch {
	case err == nil:
		log.infof("privileges: kept %s; no_new_privs set", kept)
	case kept.known:
		log.warnf("could not lower privileges, running with %s: %v", kept, err)
	default:
		log.warnf("could not lower privileges: %v", err)
	}
}

// privileges is what a process holds, for the log line.
type privileges struct {
	known bool // the sets could be read at all
	capState
	bounding capSet
	// extraBounding counts the capabilities left in the bounding set
	// beyond the wanted ones: vipd lacked CAP_SETPCAP to drop them.
	extraBounding int
}

func (p privileges) String() string {
	s := fmt.Sprintf("effective %s, permitted %s, bounding %s", p.eff, p.prm, p.bounding)
	if p.extraBounding > 0 {
		s += " (no CAP_SETPCAP to drop the others; no_new_privs keeps them from being gained)"
	}
	return s
}

// lowerPrivileges only ever lowers: it reads the current sets and keeps
// their intersection with what vipd needs. Capabilities, the bounding set
// and no_new_privs belong to each thread, so every change goes to all of
// the runtime's threads at once (AllThreadsSyscall; ENOTSUP under cgo).
// The bounding set goes first, while CAP_SETPCAP may still be effective.
func lowerPrivileges(mounts bool) (privileges, error) {
	cur, err := readCaps()
	if err != nil {
		return privileges{}, err
	}
	want, keepBounding := wantedCaps(cur, mounts)
	var bndErr error
	if cur.eff.has(unix.CAP_SETPCAP) {
		bndErr = lowerBounding(keepBounding)
	}
	nnpErr := setNoNewPrivs()
	setErr := writeCaps(want)

	now, rerr := readCaps()
	if rerr != nil {
		now = cur
	}
	bnd, berr := readBounding()
	p := privileges{known: true, capState: now, bounding: bnd, extraBounding: bits.OnesCount64(uint64(bnd &^ keepBounding))}
	return p, errors.Join(bndErr, nnpErr, setErr, rerr, berr)
}

func setNoNewPrivs() error {
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		return fmt.Errorf("set no_new_privs: %w", e)
	}
	return nil
}

// lowerBounding drops every capability but keep from the bounding set,
// which needs CAP_SETPCAP. A vipd without it (another user given only its
// two capabilities, or one re-executed after an earlier drop) skips this
// and need not do it: no_new_privs stops execve from granting any of them.
func lowerBounding(keep capSet) error {
	bnd, err := readBounding()
	if err != nil {
		return err
	}
	for c := 0; c < 64; c++ {
		if !bnd.has(c) || keep.has(c) {
			continue
		}
		if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 {
			return fmt.Errorf("drop %s from the bounding set: %w", capSet(1<<c), e)
		}
	}
	return nil
}

// readBounding reads the calling thread's bounding set (all threads have
// the same one: only AllThreadsSyscall changes it).
func readBounding() (capSet, error) {
	var s capSet
	for c := 0; c < 64; c++ {
		in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			break // past the kernel's last capability
		}
		if err != nil {
			return 0, fmt.Errorf("read the bounding set: %w", err)
		}
		if in == 1 {
			s |= 1 << c
		}
	}
	return s, nil
}

func readCaps() (capState, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return capState{}, fmt.Errorf("read capabilities: %w", err)
	}
	join := func(lo, hi uint32) capSet { return capSet(hi)<<32 | capSet(lo) }
	return capState{
		eff: join(data[0].Effective, data[1].Effective),
		prm: join(data[0].Permitted, data[1].Permitted),
		inh: join(data[0].Inheritable, data[1].Inheritable),
	}, nil
}

func writeCaps(s capState) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(s.eff), Permitted: uint32(s.prm), Inheritable: uint32(s.inh)},
		{Effective: uint32(s.eff >> 32), Permitted: uint32(s.prm >> 32), Inheritable: uint32(s.inh >> 32)},
	}
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if e != 0 {
		return fmt.Errorf("set capabilities (effective %s, permitted %s, inheritable %s): %w", s.eff, s.prm, s.inh, e)
	}
	return nil
}
