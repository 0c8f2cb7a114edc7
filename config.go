package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The config partition (docs/design.md, section 5): vip.config names a file, or a
// block device by LABEL=, PARTLABEL= or /dev/ path, optionally followed by
// :/path/in/fs. The device is found without udev or blkid, mounted read-only
// in a private directory, read, and unmounted again.

// defaultConfigPath is the file read from a config partition.
const defaultConfigPath = "/vipd.conf"

// configSpec is a parsed vip.config value.
type configSpec struct {
	file      string // a plain file: read as is
	label     string // LABEL=: filesystem label
	partLabel string // PARTLABEL=: GPT partition name
	device    string // /dev/...: the device itself
	path      string // the file inside the filesystem
}

func (s configSpec) String() string {
	switch {
	case s.file != "":
		return s.file
	case s.label != "":
		return "LABEL=" + s.label
	case s.partLabel != "":
		return "PARTLABEL=" + s.partLabel
	}
	return s.device
}

// parseConfigSpec reads a vip.config value.
func parseConfigSpec(v string) (configSpec, error) {
	var s configSpec
	rest := v
	switch {
	case strings.HasPrefix(v, "LABEL="):
		s.label, s.path = cutPath(strings.TrimPrefix(v, "LABEL="))
		rest = s.label
	case strings.HasPrefix(v, "PARTLABEL="):
		s.partLabel, s.path = cutPath(strings.TrimPrefix(v, "PARTLABEL="))
		rest = s.partLabel
	case strings.HasPrefix(v, "/dev/"):
		s.device, s.path = cutPath(v)
		rest = strings.TrimPrefix(s.device, "/dev/")
	case strings.HasPrefix(v, "/"):
		s.file = filepath.Clean(v)
		return s, nil
	default:
		return s, errors.New("must be LABEL=<label>, PARTLABEL=<name>, /dev/<device> (each optionally :/path) or an absolute file path")
	}
	if rest == "" {
		return s, errors.New("empty label or device name")
	}
	if !strings.HasPrefix(s.path, "/") {
		return s, errors.New("the path inside the filesystem must be absolute")
	}
	s.path = filepath.Clean(s.path)
	return s, nil
}

func cutPath(v string) (string, string) {
	name, path, ok := strings.Cut(v, ":")
	if !ok {
		return name, defaultConfigPath
	}
	return name, path
}

// configFileWords reads the config file syntax: one vip.key=value word per
// line (kernel quoting allowed), '#' starts a comment, blank lines are
// ignored. Settings that choose the config source cannot be in it.
func configFileWords(data []byte) ([]string, error) {
	var words []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(stripComment(sc.Text()))
		if line == "" {
			continue
		}
		param, val, hasVal := kernelUnquote(line)
		switch {
		case !strings.HasPrefix(param, "vip."):
			return nil, fmt.Errorf("line %d: %q is not a vip.<key>=<value> word", n, line)
		case !hasVal:
			return nil, fmt.Errorf("line %d: %s has no =value", n, param)
		case param == "vip.config" || param == "vip.config.timeout":
			return nil, fmt.Errorf("line %d: %s cannot be set in a config file", n, param)
		}
		words = append(words, param+"="+val)
	}
	return words, sc.Err()
}

// stripComment cuts a '#' that starts the line or follows whitespace, outside
// double quotes.
func stripComment(line string) string {
	quoted := false
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '"':
			quoted = !quoted
		case line[i] == '#' && !quoted && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return line[:i]
		}
	}
	return line
}

// Filesystem labels, read straight from the superblock.

// errNoFilesystem means the device holds none of the filesystems we read.
var errNoFilesystem = errors.New("no ext2/3/4, vfat or iso9660 filesystem")

// probeFilesystem returns the filesystem type (as mount(2) names it) and
// label of the image read through r.
func probeFilesystem(r io.ReaderAt) (fstype, label string, err error) {
	if fstype, label, ok, err := probeExt(r); ok || err != nil {
		return fstype, label, err
	}
	if fstype, label, ok, err := probeISO9660(r); ok || err != nil {
		return fstype, label, err
	}
	if fstype, label, ok, err := probeFAT(r); ok || err != nil {
		return fstype, label, err
	}
	return "", "", errNoFilesystem
}

// readFull reads len(b) bytes at off; a short read means a truncated image.
func readFull(r io.ReaderAt, b []byte, off int64) bool {
	n, _ := r.ReadAt(b, off)
	return n == len(b)
}

// probeExt reads an ext2/3/4 superblock: 1024 bytes in, magic 0xEF53 at
// offset 56, the 16-byte volume name at offset 120.
func probeExt(r io.ReaderAt) (string, string, bool, error) {
	sb := make([]byte, 1024)
	if !readFull(r, sb, 1024) {
		return "", "", false, nil
	}
	if binary.LittleEndian.Uint16(sb[56:58]) != 0xef53 {
		return "", "", false, nil
	}
	return "ext4", cString(sb[120:136]), true, nil // the ext4 driver mounts ext2 and ext3 too
}

// probeISO9660 reads the primary volume descriptor at sector 16: type 1,
// "CD001", the 32-byte volume identifier at offset 40, padded with spaces.
func probeISO9660(r io.ReaderAt) (string, string, bool, error) {
	pvd := make([]byte, 2048)
	if !readFull(r, pvd, 16*2048) {
		return "", "", false, nil
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return "", "", false, nil
	}
	return "iso9660", strings.TrimRight(string(pvd[40:72]), " "), true, nil
}

// probeFAT reads a FAT boot sector: signature 0x55AA at 510, and the
// extended BPB (boot signature 0x29) of FAT12/16 at 38 or of FAT32 at 66,
// whose 11-byte volume label follows the volume ID.
func probeFAT(r io.ReaderAt) (string, string, bool, error) {
	bs := make([]byte, 512)
	if !readFull(r, bs, 0) || bs[510] != 0x55 || bs[511] != 0xaa {
		return "", "", false, nil
	}
	bytesPerSector := binary.LittleEndian.Uint16(bs[11:13])
	if bytesPerSector < 512 || bytesPerSector > 4096 || bytesPerSector&(bytesPerSector-1) != 0 || bs[13] == 0 {
		return "", "", false, nil // not a BPB (an MBR, say)
	}
	var label []byte
	switch {
	case bs[66] == 0x29 && string(bs[82:87]) == "FAT32":
		label = bs[71:82]
	case bs[38] == 0x29 && strings.HasPrefix(string(bs[54:62]), "FAT"):
		label = bs[43:54]
	default:
		return "", "", false, nil
	}
	l := strings.TrimRight(string(label), " ")
	if l == "NO NAME" {
		l = ""
	}
	return "vfat", l, true, nil
}

// blockDevice is one entry of /sys/class/block.
type blockDevice struct {
	name      string // kernel name, e.g. loop0, sda1
	partLabel string // GPT partition name (PARTNAME in uevent)
}

// blockDevices lists the block devices the kernel knows, from sysfs (no
// udev needed).
func blockDevices(sysBlock string) ([]blockDevice, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var devs []blockDevice
	for _, e := range entries {
		d := blockDevice{name: e.Name()}
		uevent, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "uevent"))
		if err != nil {
			continue // gone since the listing
		}
		for _, line := range strings.Split(string(uevent), "\n") {
			k, v, _ := strings.Cut(line, "=")
			switch k {
			case "DEVNAME":
				d.name = v
			case "PARTNAME":
				d.partLabel = v
			}
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// findDevice looks for the device spec names, once. It returns the device
// node's path and the filesystem type found on it.
func findDevice(spec configSpec, sysBlock string) (path, fstype string, err error) {
	devs, err := blockDevices(sysBlock)
	if err != nil {
		return "", "", err
	}
	for _, d := range devs {
		node := "/dev/" + d.name
		switch {
		case spec.device != "" && node != spec.device:
			continue
		case spec.partLabel != "" && d.partLabel != spec.partLabel:
			continue
		}
		f, err := os.Open(node)
		if err != nil {
			if spec.label == "" {
				return "", "", fmt.Errorf("open %s: %w", node, err)
			}
			continue // not every device can be opened (an empty drive)
		}
		fstype, label, perr := probeFilesystem(f)
		f.Close()
		if spec.label != "" {
			if perr == nil && label == spec.label {
				return node, fstype, nil
			}
			continue
		}
		if perr != nil {
			return "", "", fmt.Errorf("%s: %w", node, perr)
		}
		return node, fstype, nil
	}
	return "", "", nil
}

// waitForDevice polls for the device until timeout: at boot, disks and
// their partitions appear late.
func waitForDevice(spec configSpec, timeout time.Duration, log *logger) (path, fstype string, err error) {
	start := time.Now()
	logged := false
	for {
		path, fstype, err := findDevice(spec, "/sys/class/block")
		if err != nil || path != "" {
			if logged && path != "" {
				log.infof("config source %s appeared as %s after %v", spec, path, time.Since(start).Round(time.Millisecond))
			}
			return path, fstype, err
		}
		if time.Since(start) >= timeout {
			return "", "", fmt.Errorf("config source %s: no such device after waiting %v (vip.config.timeout)", spec, timeout)
		}
		if !logged {
			logged = true
			log.infof("waiting up to %v for config source %s", timeout, spec)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// kernelHasFilesystem says whether /proc/filesystems lists fstype.
func kernelHasFilesystem(fstype string) bool {
	data, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return true // cannot tell: let mount(2) say
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == fstype {
			return true
		}
	}
	return false
}

// mountOptions keep files unreadable for others where the filesystem has
// no permissions of its own, so that the key-mode check means something.
var mountOptions = map[string]string{"vfat": "fmask=0177,dmask=0077", "iso9660": "mode=0400,dmode=0500"}

// withMounted mounts the device read-only (nodev, nosuid, noexec) in a
// private temporary directory, runs fn with that directory, then unmounts
// it and removes the directory.
func withMounted(device, fstype string, fn func(dir string) error) error {
	if !kernelHasFilesystem(fstype) {
		return fmt.Errorf("%s on %s: filesystem not supported by this kernel", fstype, device)
	}
	dir, err := os.MkdirTemp("", "vipd-config-")
	if err != nil {
		return fmt.Errorf("mount %s: %w", device, err)
	}
	defer os.Remove(dir)
	flags := uintptr(unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC)
	if err := unix.Mount(device, dir, fstype, flags, mountOptions[fstype]); err != nil {
		return fmt.Errorf("mount %s (%s) read-only: %w", device, fstype, err)
	}
	ferr := fn(dir)
	if err := unix.Unmount(dir, 0); err != nil {
		// Still in use: detach it so that it goes when the last user does.
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return errors.Join(ferr, fmt.Errorf("unmount %s: %w", dir, err))
		}
	}
	return ferr
}

// loadedConfig is what a config source gave: its words, and the files it
// named that had to be read while it was mounted.
type loadedConfig struct {
	words []string
	files map[string]loadedFile // by the setting that named them (vip.etcd.ca, ...)
}

type loadedFile struct {
	path string // as shown in messages
	data []byte
	mode os.FileMode
}

// loadConfig reads the config source and, while it is available, the files
// that the effective configuration names. files maps a setting to the path
// it has, given the config file's words (arguments and the kernel command
// line may override them); relative paths resolve inside the source.
func loadConfig(spec configSpec, timeout time.Duration, log *logger, files func(fileWords []string) map[string]string) (loadedConfig, error) {
	read := func(root, name string) (loadedConfig, error) {
		trim := func(err error) error {
			if spec.file != "" {
				return err
			}
			return trimRoot(err, root)
		}
		bad := func(err error) error {
			return &configError{Key: "vip.config", Value: spec.String(), Reason: err.Error()}
		}
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			return loadedConfig{}, bad(trim(err))
		}
		words, err := configFileWords(data)
		if err != nil {
			return loadedConfig{}, bad(fmt.Errorf("%s: %w", name, err))
		}
		lc := loadedConfig{words: words, files: map[string]loadedFile{}}
		for key, p := range files(words) {
			full := p
			if !filepath.IsAbs(p) {
				full = filepath.Join(root, p)
			}
			f, err := readLoadedFile(full)
			if err != nil {
				return loadedConfig{}, &configError{Key: key, Value: p, Reason: trim(err).Error()}
			}
			f.path = p
			lc.files[key] = f
		}
		return lc, nil
	}
	if spec.file != "" {
		return read(filepath.Dir(spec.file), filepath.Base(spec.file))
	}
	device, fstype, err := waitForDevice(spec, timeout, log)
	if err != nil {
		return loadedConfig{}, err
	}
	var lc loadedConfig
	err = withMounted(device, fstype, func(dir string) error {
		lc, err = read(dir, spec.path)
		return err
	})
	if err == nil {
		log.infof("read %d settings from %s (%s on %s)", len(lc.words), spec, spec.path, device)
	}
	return lc, err
}

func readLoadedFile(path string) (loadedFile, error) {
	st, err := os.Stat(path)
	if err != nil {
		return loadedFile{}, err
	}
	data, err := os.ReadFile(path)
	return loadedFile{data: data, mode: st.Mode()}, err
}

// trimRoot drops the temporary mount directory from an error's text: it
// means nothing to the operator once it is gone.
func trimRoot(err error, root string) error {
	var pe *os.PathError
	if errors.As(err, &pe) && strings.HasPrefix(pe.Path, root) {
		return fmt.Errorf("%s: %w", strings.TrimPrefix(pe.Path, root), pe.Err)
	}
	return err
}
