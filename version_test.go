package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// TestVersion: `vipd -version` exits 0 with one line naming the version,
// the commit, the Go version, the target and the licence; release() is the
// version with the commit as semver build metadata, or the bare version
// when the commit is unknown.
func TestVersion(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "0.1.0", "abc123def456-dirty"
	var out, errs bytes.Buffer
	if code := vipd([]string{"-version"}, &out, &errs); code != exitOK || errs.Len() != 0 {
		t.Fatalf("vipd -version: exit %d, stderr %q", code, errs.String())
	}
	want := "vipd 0.1.0, commit abc123def456-dirty, " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ", licence Apache-2.0\n"
	if out.String() != want {
		t.Errorf("vipd -version printed %q, want %q", out.String(), want)
	}
	if got := release(); got != "0.1.0+abc123def456-dirty" {
		t.Errorf("release() = %q", got)
	}
	commit = "unknown"
	if got := release(); got != "0.1.0" {
		t.Errorf("release() without a commit = %q, want 0.1.0", got)
	}
	if !strings.Contains(versionLine(), "commit unknown") {
		t.Errorf("versionLine() without a commit: %q", versionLine())
	}
}
