package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGroupLock: the lock is exclusive (a second taker learns the
// holder's pid), is handed across a re-exec by descriptor, and is gone,
// file and all, after release.
func TestGroupLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "vipd", "vipd_192.0.2.100.lock")
	first, err := lockGroup(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file says %q, want our pid %d", b, os.Getpid())
	}

	// flock locks belong to an open file: a second open conflicts even
	// within one process, as it would in a second vipd.
	_, err = lockGroup(path)
	var held *heldError
	if !errors.As(err, &held) || held.pid != os.Getpid() {
		t.Fatalf("second lockGroup: %v, want held by pid %d", err, os.Getpid())
	}

	// The re-exec hands the descriptor over: inherit clears close-on-exec
	// (undo sets it again), and the new image adopts the descriptor.
	env, undo, err := first.inherit()
	if err != nil {
		t.Fatal(err)
	}
	if flags, _ := unix.FcntlInt(first.f.Fd(), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC != 0 {
		t.Errorf("after inherit the lock's descriptor is still close-on-exec")
	}
	undo()
	if flags, _ := unix.FcntlInt(first.f.Fd(), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("after undo the lock's descriptor is not close-on-exec")
	}
	name, _, _ := strings.Cut(env, "=")
	// What exec does: the old image's file is gone, its descriptor (the
	// same open file, so the same lock) lives on under the number handed
	// over. A dup stands in for it here.
	dup, err := unix.Dup(int(first.f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	first.f.Close()
	fd := strconv.Itoa(dup)
	t.Setenv(name, fd+" "+path)
	adopted, err := lockGroup(path)
	if err != nil {
		t.Fatalf("adopting descriptor %s: %v", fd, err)
	}
	if _, set := os.LookupEnv(lockFDEnv); set {
		t.Errorf("%s still set after adoption", lockFDEnv)
	}
	if strconv.Itoa(int(adopted.f.Fd())) != fd {
		t.Errorf("adopted descriptor %d, want %s", adopted.f.Fd(), fd)
	}
	if _, err := lockGroup(path); !errors.As(err, &held) {
		t.Fatalf("after adoption a new taker got %v, want held", err)
	}

	// A descriptor that is not the lock is not adopted; the lock is
	// taken (or found held) as at any start.
	t.Setenv(lockFDEnv, "0")
	if _, err := lockGroup(path); !errors.As(err, &held) {
		t.Fatalf("with a bogus %s: %v, want held", lockFDEnv, err)
	}

	// A SIGHUP that changed the group hands over the old group's lock:
	// the new image releases it and takes its own. (A dup stands in for
	// the inherited descriptor, as above.)
	other := filepath.Join(filepath.Dir(path), "vipd_192.0.2.200.lock")
	old, err := lockGroup(other)
	if err != nil {
		t.Fatal(err)
	}
	oldDup, err := unix.Dup(int(old.f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	old.f.Close()
	t.Setenv(lockFDEnv, strconv.Itoa(oldDup)+" "+other)
	if _, err := lockGroup(path); !errors.As(err, &held) {
		t.Fatalf("with the other group's lock handed over: %v, want this group held (by adopted)", err)
	}
	if l, err := lockGroup(other); err != nil {
		t.Errorf("the other group's handed-over lock was not released: %v", err)
	} else {
		l.release()
	}

	adopted.release()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file after release: %v, want gone", err)
	}
	again, err := lockGroup(path)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again.release()

	// No writable directory: an error that is not "held".
	if _, err := lockGroup("/proc/vipd-test/x.lock"); err == nil || errors.As(err, &held) {
		t.Errorf("lock under /proc: %v, want a plain error", err)
	}
}
