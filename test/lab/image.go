package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// Filesystem images are made with the real tools (e2fsprogs, dosfstools,
// xorriso), as an operator would make a config partition. A missing tool
// fails the test: make test installs them (test/install-deps), and a skip
// would hide a whole filesystem's reader going untested.

var imageSeq atomic.Int32

func needTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed (make test installs it; or apt-get install e2fsprogs dosfstools xorriso)", name)
	}
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// contentDir holds files to put into an image.
func contentDir(t testing.TB, files map[string]string) string {
	dir := t.TempDir()
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// MakeImage is a filesystem image (ext4, vfat, vfat16, vfat32,
// iso9660) labelled label, holding files.
func MakeImage(t testing.TB, fstype, label string, files map[string]string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), fmt.Sprintf("img%d", imageSeq.Add(1)))
	src := contentDir(t, files)
	switch fstype {
	case "ext4":
		needTool(t, "mkfs.ext4")
		run(t, "truncate", "-s", "8M", img)
		run(t, "mkfs.ext4", "-q", "-F", "-L", label, "-d", src, img)
	case "vfat", "vfat16", "vfat32":
		needTool(t, "mkfs.vfat")
		// The smallest image each FAT width accepts.
		layout := map[string]struct{ size, bits string }{"vfat": {"8M", "12"}, "vfat16": {"20M", "16"}, "vfat32": {"40M", "32"}}[fstype]
		run(t, "truncate", "-s", layout.size, img)
		run(t, "mkfs.vfat", "-F", layout.bits, "-n", label, img)
	case "iso9660":
		needTool(t, "xorriso")
		run(t, "xorriso", "-as", "mkisofs", "-quiet", "-V", label, "-o", img, src)
	}
	return img
}
