package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vipd/test/lab"
)

func TestParseConfigSpec(t *testing.T) {
	tests := []struct {
		in   string
		want configSpec
		err  string
	}{
		{in: "LABEL=VIPCFG", want: configSpec{label: "VIPCFG", path: "/vipd.conf"}},
		{in: "LABEL=VIPCFG:/etc/vipd.conf", want: configSpec{label: "VIPCFG", path: "/etc/vipd.conf"}},
		{in: "PARTLABEL=vipd-config", want: configSpec{partLabel: "vipd-config", path: "/vipd.conf"}},
		{in: "/dev/vdb1", want: configSpec{device: "/dev/vdb1", path: "/vipd.conf"}},
		{in: "/dev/vdb1:/a/../b.conf", want: configSpec{device: "/dev/vdb1", path: "/b.conf"}},
		{in: "/etc/vipd.conf", want: configSpec{file: "/etc/vipd.conf"}},
		{in: "vipd.conf", err: "must be LABEL="},
		{in: "LABEL=", err: "empty label"},
		{in: "/dev/", err: "empty label or device name"},
		{in: "LABEL=x:rel.conf", err: "must be absolute"},
	}
	for _, tt := range tests {
		got, err := parseConfigSpec(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want one containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: got %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestConfigFileWords(t *testing.T) {
	data := "# vipd settings\n\nvip.address=192.0.2.100  # the VIP\n\tvip.name=\"cp 1\"\nvip.key=/a#b\n"
	got, err := configFileWords([]byte(data))
	want := []string{"vip.address=192.0.2.100", "vip.name=cp 1", "vip.key=/a#b"}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	for in, wantErr := range map[string]string{
		"vip.address=1\nroot=/dev/sda\n": `line 2: "root=/dev/sda" is not a vip.<key>=<value> word`,
		"vip.address\n":                  "line 1: vip.address has no =value",
		"vip.config=LABEL=x\n":           "line 1: vip.config cannot be set in a config file",
		"vip.config.timeout=5\n":         "line 1: vip.config.timeout cannot be set in a config file",
	} {
		if _, err := configFileWords([]byte(in)); err == nil || err.Error() != wantErr {
			t.Errorf("%q: error %v, want %q", in, err, wantErr)
		}
	}
}

func TestConfigPrecedence(t *testing.T) {
	file := []string{"vip.address=192.0.2.1", "vip.etcd=http://192.0.2.9:2379", "vip.ttl=9", "vip.name=file"}
	c, src, err := parseConfigSources([]string{"vip.name=arg"}, []string{"vip.ttl=5"}, file, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "arg" || c.TTL.Seconds() != 5 || c.Etcd[0] != "http://192.0.2.9:2379" {
		t.Fatalf("precedence: %+v", c)
	}
	for key, want := range map[string]string{"vip.name": fromArgument, "vip.ttl": fromCmdline, "vip.address": fromConfigFile, "vip.garp": fromDefault} {
		if src[key] != want {
			t.Errorf("%s came from %q, want %q", key, src[key], want)
		}
	}
	lines := c.WordsWithSources(src)
	if !slices.Contains(lines, "vip.ttl=5s # kernel command line") || !slices.Contains(lines, "vip.address=192.0.2.1/32 # config file") {
		t.Fatalf("-check lines: %q", lines)
	}
}

// TestCheckLinesHealthKeys: -check prints the health and preference keys
// with their values and sources, including the cross-checked pairs.
func TestCheckLinesHealthKeys(t *testing.T) {
	file := []string{"vip.address=192.0.2.1", "vip.etcd=http://192.0.2.9:2379",
		"vip.check=https://api.example.com:6443/readyz", "vip.check.ca=check-ca.pem", "vip.check.timeout=2"}
	args := []string{"vip.priority=-5", "vip.check.interval=2500ms"}
	cmdline := []string{"vip.check.fall=1", "vip.preempt.delay=0"}
	c, src, err := parseConfigSources(args, cmdline, file, "")
	if err != nil {
		t.Fatal(err)
	}
	lines := c.WordsWithSources(src)
	for _, want := range []string{
		"vip.check=https://api.example.com:6443/readyz # config file",
		"vip.check.ca=check-ca.pem # config file",
		"vip.check.interval=2.5s # argument",
		"vip.check.timeout=2s # config file",
		"vip.check.rise=2 # default",
		"vip.check.fall=1 # kernel command line",
		"vip.priority=-5 # argument",
		"vip.preempt.delay=0s # kernel command line",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("-check lines lack %q:\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

func TestProbeFilesystemLabels(t *testing.T) {
	tests := []struct{ kind, label, fstype string }{
		{"ext4", "VIPCFG-ext4", "ext4"},
		{"vfat", "VIPCFG12", "vfat"},
		{"vfat16", "VIPCFG16", "vfat"},
		{"vfat32", "VIPCFG32", "vfat"},
		{"iso9660", "VIPCFG_ISO", "iso9660"},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			img := lab.MakeImage(t, tt.kind, tt.label, map[string]string{"vipd.conf": "vip.address=192.0.2.100\n"})
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fstype, label, err := probeFilesystem(f)
			if err != nil || fstype != tt.fstype || label != tt.label {
				t.Fatalf("got %q %q %v; want %q %q", fstype, label, err, tt.fstype, tt.label)
			}

			// Truncated before its superblock: no filesystem, said plainly.
			data, _ := os.ReadFile(img)
			cut := map[string]int{"ext4": 1500, "vfat": 300, "vfat16": 300, "vfat32": 300, "iso9660": 16 * 2048}[tt.kind]
			if _, _, err := probeFilesystem(bytes.NewReader(data[:cut])); !errors.Is(err, errNoFilesystem) {
				t.Fatalf("truncated image: %v, want %v", err, errNoFilesystem)
			}
		})
	}
}

func TestProbeFilesystemCorrupt(t *testing.T) {
	img := lab.MakeImage(t, "ext4", "VIPCFG", nil)
	data, _ := os.ReadFile(img)
	data[1024+56] ^= 0xff // the magic
	if _, _, err := probeFilesystem(bytes.NewReader(data)); !errors.Is(err, errNoFilesystem) || err.Error() != "no ext2/3/4, vfat or iso9660 filesystem" {
		t.Fatalf("corrupt magic: %v", err)
	}
	fat := lab.MakeImage(t, "vfat", "VIPCFG", nil)
	data, _ = os.ReadFile(fat)
	data[11], data[12] = 0x01, 0x00 // 1 byte per sector: not a BPB
	if _, _, err := probeFilesystem(bytes.NewReader(data)); !errors.Is(err, errNoFilesystem) {
		t.Fatalf("corrupt BPB: %v", err)
	}
}

func FuzzProbeFilesystem(f *testing.F) {
	f.Add(make([]byte, 4096))
	boot := make([]byte, 512)
	boot[510], boot[511], boot[11], boot[12], boot[13], boot[38] = 0x55, 0xaa, 0x00, 0x02, 1, 0x29
	copy(boot[54:], "FAT16   ")
	f.Add(boot)
	f.Fuzz(func(t *testing.T, data []byte) {
		fstype, label, err := probeFilesystem(bytes.NewReader(data))
		if err != nil {
			if fstype != "" || label != "" {
				t.Fatalf("error %v with a result %q %q", err, fstype, label)
			}
			return
		}
		max := map[string]int{"ext4": 16, "vfat": 11, "iso9660": 32}[fstype]
		if max == 0 || len(label) > max {
			t.Fatalf("fstype %q label %q (max %d)", fstype, label, max)
		}
	})
}

// GPT partition names come from the kernel's uevent for each block device.
func TestBlockDevicesFromSysfs(t *testing.T) {
	sys := t.TempDir()
	for name, uevent := range map[string]string{
		"vda":  "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
		"vda1": "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=vipcfg\n",
	} {
		if err := os.MkdirAll(filepath.Join(sys, name), 0o755); err != nil {
			t.Fatal(err)
		}
		lab.WriteFile(t, filepath.Join(sys, name, "uevent"), uevent)
	}
	devs, err := blockDevices(sys)
	if err != nil {
		t.Fatal(err)
	}
	want := []blockDevice{{name: "vda"}, {name: "vda1", partLabel: "vipcfg"}}
	if !slices.Equal(devs, want) {
		t.Fatalf("got %+v, want %+v", devs, want)
	}
	if _, err := blockDevices(filepath.Join(sys, "missing")); err == nil {
		t.Fatal("a missing /sys/class/block was not an error")
	}
}

func TestKernelFilesystems(t *testing.T) {
	if !kernelHasFilesystem("proc") {
		t.Fatal("/proc/filesystems does not list proc")
	}
	if kernelHasFilesystem("vipdfs") {
		t.Fatal("a made-up filesystem is listed")
	}
	err := withMounted("/dev/null", "vipdfs", func(string) error { return nil })
	if err == nil || err.Error() != "vipdfs on /dev/null: filesystem not supported by this kernel" {
		t.Fatalf("error %v", err)
	}
}

// The TLS files of vip.etcd.* and vip.check.ca (tls.go), read with the
// configuration.
func TestEtcdTLS(t *testing.T) {
	pki := lab.NewPKI(t)
	file := func(path string, mode os.FileMode) loadedFile {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return loadedFile{path: path, data: data, mode: mode}
	}
	https := etcdConfig{Etcd: []string{"https://192.0.2.1:2379"}}
	files := map[string]loadedFile{
		"vip.etcd.ca":   file(pki.CACert, 0o644),
		"vip.etcd.cert": file(pki.ClientCert, 0o644),
		"vip.etcd.key":  file(pki.ClientKey, 0o600),
	}
	var logs bytes.Buffer
	log := &logger{w: &logs}

	cfg, err := etcdTLS(https, files, log)
	if err != nil || cfg == nil || cfg.RootCAs == nil || len(cfg.Certificates) != 1 {
		t.Fatalf("mutual TLS: %+v, %v", cfg, err)
	}
	if logs.Len() != 0 {
		t.Fatalf("warned about a 0600 key: %s", logs.String())
	}

	if cfg, err := etcdTLS(etcdConfig{Etcd: []string{"http://192.0.2.1:2379"}}, nil, log); cfg != nil || err != nil {
		t.Fatalf("plain http: %+v, %v; want nil, nil", cfg, err)
	}

	// The health check's CA is read with the etcd files but is not etcd's.
	checkCA := map[string]loadedFile{"vip.check.ca": file(pki.CACert, 0o644)}
	if cfg, err := etcdTLS(etcdConfig{Etcd: []string{"http://192.0.2.1:2379"}}, checkCA, log); cfg != nil || err != nil {
		t.Fatalf("plain http with a check CA: %+v, %v; want nil, nil", cfg, err)
	}
	if p := tlsPaths(Config{etcdConfig: etcdConfig{EtcdCA: "e.pem"}, healthConfig: healthConfig{CheckCA: "c.pem"}}); len(p) != 2 || p["vip.check.ca"] != "c.pem" || p["vip.etcd.ca"] != "e.pem" {
		t.Fatalf("tlsPaths: %v", p)
	}

	open := files["vip.etcd.key"]
	open.mode = 0o640
	loose := map[string]loadedFile{"vip.etcd.cert": files["vip.etcd.cert"], "vip.etcd.key": open}
	if _, err := etcdTLS(https, loose, log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "can be read by group or others (mode 0640)") {
		t.Fatalf("no warning for a 0640 key: %q", logs.String())
	}

	for name, tc := range map[string]struct {
		cfg   etcdConfig
		files map[string]loadedFile
		want  string
	}{
		"mixed schemes":   {etcdConfig{Etcd: []string{"https://a:2379", "http://b:2379"}}, files, `vip.etcd="https://a:2379,http://b:2379": mixes http:// and TLS`},
		"TLS files, http": {etcdConfig{Etcd: []string{"http://a:2379"}}, files, `mixes http:// and TLS`},
		"CA not PEM":      {https, map[string]loadedFile{"vip.etcd.ca": {path: "ca.pem", data: []byte("junk")}}, `vip.etcd.ca="ca.pem": no PEM certificate in it`},
		"key of another cert": {https, map[string]loadedFile{"vip.etcd.cert": files["vip.etcd.cert"], "vip.etcd.key": file(pki.ServerKey, 0o600)},
			"vip.etcd.cert=" + `"` + pki.ClientCert + `": with vip.etcd.key`},
	} {
		if _, err := etcdTLS(tc.cfg, tc.files, log); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}
