package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

func TestLogLines(t *testing.T) {
	var kmsg, plain bytes.Buffer
	k := &logger{w: &kmsg, kmsg: true}
	k.infof("leader -> candidate: %s\n", "lease lost")
	k.warnf("etcd unreachable")
	k.errorf("cannot add")
	// One record per write, with the syslog priority the kernel parses.
	want := "<6>vipd: leader -> candidate: lease lost\n<4>vipd: etcd unreachable\n<3>vipd: cannot add\n"
	if kmsg.String() != want {
		t.Fatalf("kmsg:\n got %q\nwant %q", kmsg.String(), want)
	}

	p := &logger{w: &plain}
	p.warnf("etcd unreachable")
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\S* vipd: warning: etcd unreachable\n$`).MatchString(plain.String()) {
		t.Fatalf("stderr line %q", plain.String())
	}
}

// TestLogAuto: vip.log=auto writes to /dev/kmsg only when nobody reads
// stderr (/dev/console under a minimal init, /dev/null, closed); a file, a
// pipe or a socket such as the journal's keeps the lines (they once all
// went to /dev/kmsg, and `journalctl -u vipd` was empty).
func TestLogAuto(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	closed, err := os.CreateTemp(t.TempDir(), "closed")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	for _, tt := range []struct {
		what string
		f    *os.File
		kmsg bool
	}{
		{"pipe", pw, false},
		{"file", file, false},
		{"/dev/null", null, true},
		{"closed", closed, true},
	} {
		if got := kmsgByDefault(tt.f); got != tt.kmsg {
			t.Errorf("stderr is a %s: kmsg=%v, want %v", tt.what, got, tt.kmsg)
		}
	}
	// /dev/console, where a minimal init points stderr, when this machine
	// lets us open it.
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		if !kmsgByDefault(c) {
			t.Error("stderr is /dev/console: kmsg=false, want true")
		}
		c.Close()
	}
	// The logger as main opens it: a pipe gets the lines.
	l, err := openLogger("auto", pw)
	if err != nil {
		t.Fatal(err)
	}
	if l.kmsg || l.w != pw {
		t.Fatalf("auto with a pipe for stderr writes to %v (kmsg %v), want the pipe", l.w, l.kmsg)
	}
}
