package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// One vipd per VIP group per host. A second one (a bare `vipd` run by
// hand reads /proc/cmdline, so this is easy) would resume the first one's
// lease from the state file, and both would act as its holder. The lock is
// an flock on /run/vipd/<group>.lock, taken before anything touches etcd
// or the address, and released by the kernel when the process dies. The
// file holds the holder's pid, for the second one's error line. A SIGHUP
// re-exec keeps the lock: the descriptor is inherited by the new image
// (same pid), which finds it through lockFDEnv.

const lockFDEnv = "VIPD_LOCK_FD"

// groupLock is a held lock.
type groupLock struct {
	f    *os.File
	path string
}

// heldError says that another live process holds the group's lock.
type heldError struct {
	path string
	pid  int // 0 if the file does not say
}

func (e *heldError) Error() string {
	who := "another vipd"
	if e.pid > 0 {
		who = fmt.Sprintf("another vipd (pid %d)", e.pid)
	}
	return fmt.Sprintf("%s already runs this VIP group on this node (it holds %s); not starting a second one", who, e.path)
}

// lockPath is the lock file of the group keyed by vip.key, beside its
// state file.
func lockPath(key string) string {
	return strings.TrimSuffix(statePath(key), ".json") + ".lock"
}

// lockGroup takes the group's lock, or adopts the one a re-exec handed
// over. A *heldError means another process holds it; any other error
// means no lock can be had here (no writable /run/vipd).
func lockGroup(path string) (*groupLock, error) {
	if v, ok := os.LookupEnv(lockFDEnv); ok {
		os.Unsetenv(lockFDEnv) // nothing started later inherits it
		if l, err := adoptLock(path, v); err == nil {
			return l, nil
		}
		// A broken handoff (this process no longer holds the lock it
		// names), or another group's lock (released by adoptLock),
		// falls back to taking the lock as at any start.
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	// Whoever removed the file (a graceful stop) may have done so between
	// our open and our flock: the lock we got is then on a file nobody
	// else can find. Take it again on the file that is there.
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			pid := readLockPID(f)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &heldError{path: path, pid: pid}
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !sameFile(f, path) {
			f.Close()
			continue
		}
		l := &groupLock{f: f, path: path}
		if err := l.writePID(); err != nil {
			f.Close()
			return nil, err
		}
		return l, nil
	}
	return nil, fmt.Errorf("lock %s: the file kept being replaced", path)
}

// adoptLock takes over the descriptor a re-exec handed over ("FD PATH"),
// if it is still this group's lock file and still locked by this process.
// The lock of another group (the configuration changed it) is released:
// that group is handed over (resume.go settleEarlier). A descriptor that
// is not the file named is left alone: the word may have come from
// anywhere.
func adoptLock(path, word string) (*groupLock, error) {
	fdText, was, _ := strings.Cut(word, " ")
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a descriptor", lockFDEnv, word)
	}
	if !sameInode(fd, was) {
		return nil, fmt.Errorf("%s=%q: descriptor %d is not %s", lockFDEnv, word, fd, was)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), was)
	if was != path {
		f.Close()
		return nil, fmt.Errorf("%s=%q: the lock of another group, released", lockFDEnv, word)
	}
	// flock on the open file that holds the lock succeeds at once.
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s=%d no longer holds the lock of %s: %w", lockFDEnv, fd, path, err)
	}
	return &groupLock{f: f, path: path}, nil
}

// sameFile says whether f is the file now at path.
func sameFile(f *os.File, path string) bool { return sameInode(int(f.Fd()), path) }

// sameInode says whether the descriptor fd is the file now at path.
func sameInode(fd int, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(fd, &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

func (l *groupLock) writePID() error {
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	if _, err := l.f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return fmt.Errorf("write %s: %w", l.path, err)
	}
	return nil
}

// readLockPID reads the pid the holder wrote (0 if none can be read).
func readLockPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil {
		return 0
	}
	return pid
}

// inherit makes the descriptor survive the exec that follows and returns
// the environment word that names it; undo restores close-on-exec if the
// exec fails. (handedOver, resume.go)
func (l *groupLock) inherit() (env string, undo func(), err error) {
	if l == nil {
		return "", func() {}, nil
	}
	fd := int(l.f.Fd())
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		return "", nil, fmt.Errorf("keep %s across the re-exec: %w", l.path, err)
	}
	return lockFDEnv + "=" + strconv.Itoa(fd) + " " + l.path, func() { unix.CloseOnExec(fd) }, nil
}

// release removes the file and unlocks it, after a final stop. The file
// goes first, so that no one takes a lock on it in between (lockGroup
// checks that it locked the file that is there).
func (l *groupLock) release() {
	if l == nil {
		return
	}
	if sameFile(l.f, l.path) {
		os.Remove(l.path)
	}
	l.f.Close()
}
