package main

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSplitCmdline(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"only spaces", " \t\n ", nil},
		{"plain words", "root=/dev/sda1 ro quiet", []string{"root=/dev/sda1", "ro", "quiet"}},
		{"runs of whitespace", "  a \t b\n\n\vc\r\fd  ", []string{"a", "b", "c", "d"}},
		{"proc cmdline trailing newline",
			"BOOT_IMAGE=/vmlinuz root=/dev/sda1 vip.address=192.0.2.10\n",
			[]string{"BOOT_IMAGE=/vmlinuz", "root=/dev/sda1", "vip.address=192.0.2.10"}},
		{"quoted value", `vip.name="a b" x`, []string{"vip.name=a b", "x"}},
		{"quoted word", `"vip.name=a b" x`, []string{"vip.name=a b", "x"}},
		{"quoted word without value", `"a b" x`, []string{"a b", "x"}},
		{"quote in middle stays", `vip.name=a"b c"d e`, []string{`vip.name=a"b c"d`, "e"}},
		{"quote in param stays", `a"b c"=d e`, []string{`a"b c"=d`, "e"}},
		{"value quote then text", `x="a b"c d`, []string{`x=a b"c`, "d"}},
		{"three quotes in value", `vip.name="a"b"`, []string{`vip.name=a"b`}},
		{"unterminated value quote", `vip.name="a b c`, []string{"vip.name=a b c"}},
		{"unterminated word quote", `x "vip.name=a b`, []string{"x", "vip.name=a b"}},
		{"empty value", "vip.name= vip.key", []string{"vip.name=", "vip.key"}},
		{"empty quoted value", `vip.name="" y`, []string{"vip.name=", "y"}},
		{"quoted word with empty value", `"a=" y`, []string{"a=", "y"}},
		{"equals first does not count", "=a=b", []string{"=a=b"}},
		{"empty quoted words dropped", `"" x "`, []string{"x"}},
		{"open quote swallows the rest", `" "" x`, []string{` "" x`}},
		{"lone quote at end", `x "`, []string{"x"}},
		{"double dash stops", "a b -- vip.address=192.0.2.1", []string{"a", "b"}},
		{"double dash first", "-- a", nil},
		{"double dash last", "a --", []string{"a"}},
		{"quoted double dash stops like the kernel", `a "--" b`, []string{"a"}},
		{"double dash inside quoted word", `a "x -- y" b`, []string{"a", "x -- y", "b"}},
		{"double dash inside quoted value", `a v="-- y" b`, []string{"a", "v=-- y", "b"}},
		{"double dash as part of a word", "a --x x-- --=1 --- b", []string{"a", "--x", "x--", "--=1", "---", "b"}},
		{"nul ends the string", "a\x00b c", []string{"a"}},
		{"latin-1 nbsp separates", "a\xa0b", []string{"a", "b"}},
		{"tab inside quotes kept", "v=\"a\tb\"", []string{"v=a\tb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := splitCmdline(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("splitCmdline(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// kcMinimal is the smallest valid set of arguments.
var kcMinimal = []string{"vip.address=192.0.2.10", "vip.etcd=http://192.0.2.1:2379"}

func TestParseConfigDefaults(t *testing.T) {
	got, err := parseConfig(kcMinimal, nil, "node1")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		groupConfig: groupConfig{
			Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32")},
			Interface: "auto",
			Key:       "/vipd/192.0.2.10",
			Name:      "node1",
		},
		etcdConfig:     etcdConfig{Etcd: []string{"http://192.0.2.1:2379"}, TTL: 3 * time.Second},
		announceConfig: announceConfig{Garp: 5, GarpInterval: time.Second, GarpRefresh: 30 * time.Second, Probe: 20 * time.Millisecond},
		healthConfig:   healthConfig{CheckInterval: time.Second, CheckTimeout: time.Second, CheckRise: 2, CheckFall: 3, PreemptDelay: 5 * time.Second},
		runConfig:      runConfig{ConfigTimeout: 30 * time.Second, Log: "auto"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseConfigSources(t *testing.T) {
	tests := []struct {
		name          string
		args, cmdline []string
		check         func(c Config) bool
	}{
		{"args beat cmdline", append([]string{"vip.ttl=7"}, kcMinimal...), []string{"vip.ttl=5"},
			func(c Config) bool { return c.TTL == 7*time.Second }},
		{"cmdline beats default", kcMinimal, []string{"vip.ttl=5"},
			func(c Config) bool { return c.TTL == 5*time.Second }},
		{"all from cmdline", nil, append([]string{"root=/dev/sda1", "quiet", "console=ttyS0"}, kcMinimal...),
			func(c Config) bool { return c.Addresses[0].Addr().String() == "192.0.2.10" }},
		{"last one wins in args", append([]string{"vip.garp=1", "vip.garp=2"}, kcMinimal...), nil,
			func(c Config) bool { return c.Garp == 2 }},
		{"last one wins in cmdline", kcMinimal, []string{"vip.garp=1", "vip.garp=3"},
			func(c Config) bool { return c.Garp == 3 }},
		{"bad cmdline value overridden by args", append([]string{"vip.ttl=4"}, kcMinimal...), []string{"vip.ttl=bogus"},
			func(c Config) bool { return c.TTL == 4*time.Second }},
		{"args are unquoted like the kernel", append([]string{`vip.etcd.ca="/etc/my ca.pem"`}, kcMinimal...), nil,
			func(c Config) bool { return c.EtcdCA == "/etc/my ca.pem" }},
		{"quoted whole arg", append([]string{`"vip.etcd.ca=/a b"`}, kcMinimal...), nil,
			func(c Config) bool { return c.EtcdCA == "/a b" }},
		{"decimal seconds", append([]string{"vip.ttl=2.5", "vip.probe=0", "vip.garp.refresh=0"}, kcMinimal...), nil,
			func(c Config) bool { return c.TTL == 2500*time.Millisecond && c.Probe == 0 && c.GarpRefresh == 0 }},
		{"go duration", append([]string{"vip.ttl=2500ms", "vip.garp.interval=1.5", "vip.config.timeout=2m"}, kcMinimal...), nil,
			func(c Config) bool {
				return c.TTL == 2500*time.Millisecond && c.GarpInterval == 1500*time.Millisecond && c.ConfigTimeout == 2*time.Minute
			}},
		{"prefix kept, address unmasked", []string{"vip.address=192.0.2.10/24,198.51.100.7", "vip.etcd=https://a:2379,http://b/"}, nil,
			func(c Config) bool {
				return slices.Equal(c.Addresses, []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24"), netip.MustParsePrefix("198.51.100.7/32")}) &&
					c.Key == "/vipd/192.0.2.10" && slices.Equal(c.Etcd, []string{"https://a:2379", "http://b/"})
			}},
		{"dual stack, IPv6 defaults to /128", []string{"vip.address=2001:db8::100,192.0.2.10", "vip.etcd=http://a:2379"}, nil,
			func(c Config) bool {
				return slices.Equal(c.Addresses, []netip.Prefix{netip.MustParsePrefix("2001:db8::100/128"), netip.MustParsePrefix("192.0.2.10/32")}) &&
					c.Key == "/vipd/2001:db8::100"
			}},
		{"zero interval is fine for one announcement", append([]string{"vip.garp=1", "vip.garp.interval=0"}, kcMinimal...), nil,
			func(c Config) bool { return c.Garp == 1 && c.GarpInterval == 0 }},
		{"cert and key together", append([]string{"vip.etcd.cert=c.pem", "vip.etcd.key=k.pem"}, kcMinimal...), nil,
			func(c Config) bool { return c.EtcdCert == "c.pem" && c.EtcdKey == "k.pem" }},
		{"explicit empty name means MAC", append([]string{"vip.name="}, kcMinimal...), nil,
			func(c Config) bool { return c.Name == "" }},
		{"empty config source is none", append([]string{"vip.config="}, kcMinimal...), nil,
			func(c Config) bool { return c.ConfigSource == "" }},
		{"interface name", append([]string{"vip.interface=br-lan.10"}, kcMinimal...), nil,
			func(c Config) bool { return c.Interface == "br-lan.10" }},
		{"tcp check", append([]string{"vip.check=tcp://127.0.0.1:6443"}, kcMinimal...), nil,
			func(c Config) bool { return c.Check == "tcp://127.0.0.1:6443" && c.CheckCA == "" }},
		{"tcp check, IPv6", append([]string{"vip.check=tcp://[2001:db8::5]:6443"}, kcMinimal...), nil,
			func(c Config) bool { return c.Check == "tcp://[2001:db8::5]:6443" }},
		{"tcp check, name", append([]string{"vip.check=tcp://api.cluster_1.example:6443"}, kcMinimal...), nil,
			func(c Config) bool { return c.Check == "tcp://api.cluster_1.example:6443" }},
		{"http check without path", append([]string{"vip.check=http://192.0.2.5:8080"}, kcMinimal...), nil,
			func(c Config) bool { return c.Check == "http://192.0.2.5:8080" }},
		{"http check with query", append([]string{"vip.check=http://node.example.:10256/healthz?verbose=1&x=%20"}, kcMinimal...), nil,
			func(c Config) bool { return c.Check == "http://node.example.:10256/healthz?verbose=1&x=%20" }},
		{"https loopback without CA", kcMinimal, splitCmdline(`quiet vip.check="https://127.0.0.1:6443/readyz"`),
			func(c Config) bool { return c.Check == "https://127.0.0.1:6443/readyz" && c.CheckCA == "" }},
		{"https loopback 127/8 without CA", append([]string{"vip.check=https://127.1.2.3:6443"}, kcMinimal...), nil,
			func(c Config) bool { return c.Check == "https://127.1.2.3:6443" }},
		{"https ::1 without CA", append([]string{"vip.check=https://[::1]:6443/readyz"}, kcMinimal...), nil,
			func(c Config) bool { return c.Check == "https://[::1]:6443/readyz" }},
		{"https localhost without CA", append([]string{"vip.check=https://localhost:6443/"}, kcMinimal...), nil,
			func(c Config) bool { return c.Check == "https://localhost:6443/" }},
		{"https with CA", append([]string{"vip.check=https://api.example.com:6443/readyz", "vip.check.ca=check-ca.pem"}, kcMinimal...), nil,
			func(c Config) bool {
				return c.Check == "https://api.example.com:6443/readyz" && c.CheckCA == "check-ca.pem"
			}},
		{"https loopback with CA", append([]string{"vip.check=https://127.0.0.1:6443", "vip.check.ca=/etc/ca.pem"}, kcMinimal...), nil,
			func(c Config) bool { return c.CheckCA == "/etc/ca.pem" }},
		{"check CA from cmdline, check from args", append([]string{"vip.check=https://192.0.2.5:6443"}, kcMinimal...), []string{"vip.check.ca=ca.pem"},
			func(c Config) bool { return c.CheckCA == "ca.pem" }},
		{"empty check is none", append([]string{"vip.check="}, kcMinimal...), []string{"vip.check=tcp://127.0.0.1:1"},
			func(c Config) bool { return c.Check == "" }},
		{"check times", append([]string{"vip.check.interval=500ms", "vip.check.timeout=0.5"}, kcMinimal...), nil,
			func(c Config) bool {
				return c.CheckInterval == 500*time.Millisecond && c.CheckTimeout == 500*time.Millisecond
			}},
		{"shorter timeout", append([]string{"vip.check.timeout=250ms"}, kcMinimal...), nil,
			func(c Config) bool { return c.CheckInterval == time.Second && c.CheckTimeout == 250*time.Millisecond }},
		{"longer interval", append([]string{"vip.check.interval=10"}, kcMinimal...), nil,
			func(c Config) bool { return c.CheckInterval == 10*time.Second && c.CheckTimeout == time.Second }},
		{"timeout and interval from different sources", append([]string{"vip.check.timeout=3s"}, kcMinimal...), []string{"vip.check.interval=3"},
			func(c Config) bool { return c.CheckInterval == 3*time.Second && c.CheckTimeout == 3*time.Second }},
		{"rise and fall bounds", append([]string{"vip.check.rise=1", "vip.check.fall=100"}, kcMinimal...), nil,
			func(c Config) bool { return c.CheckRise == 1 && c.CheckFall == 100 }},
		{"rise and fall other bounds", append([]string{"vip.check.rise=100", "vip.check.fall=1"}, kcMinimal...), nil,
			func(c Config) bool { return c.CheckRise == 100 && c.CheckFall == 1 }},
		{"priority lowest", append([]string{"vip.priority=-1000000"}, kcMinimal...), nil,
			func(c Config) bool { return c.Priority == -1000000 }},
		{"priority highest", append([]string{"vip.priority=1000000"}, kcMinimal...), nil,
			func(c Config) bool { return c.Priority == 1000000 }},
		{"priority minus zero", append([]string{"vip.priority=-0"}, kcMinimal...), nil,
			func(c Config) bool { return c.Priority == 0 }},
		{"priority from cmdline", kcMinimal, []string{"vip.priority=10"},
			func(c Config) bool { return c.Priority == 10 }},
		{"preempt delay zero", append([]string{"vip.preempt.delay=0"}, kcMinimal...), nil,
			func(c Config) bool { return c.PreemptDelay == 0 }},
		{"preempt delay decimal", append([]string{"vip.preempt.delay=2.5"}, kcMinimal...), nil,
			func(c Config) bool { return c.PreemptDelay == 2500*time.Millisecond }},
		{"preempt delay long", append([]string{"vip.preempt.delay=10m"}, kcMinimal...), nil,
			func(c Config) bool { return c.PreemptDelay == 10*time.Minute }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, tt.cmdline, "node1")
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestNameFromHostname(t *testing.T) {
	tests := map[string]string{
		"node1":                  "node1",
		"":                       "",
		"(none)":                 "",
		"localhost":              "",
		"LocalHost.localdomain":  "",
		"bad host":               "",
		strings.Repeat("a", 254): "",
	}
	for hostname, want := range tests {
		c, err := parseConfig(kcMinimal, nil, hostname)
		if err != nil {
			t.Fatalf("hostname %q: %v", hostname, err)
		}
		if c.Name != want {
			t.Errorf("hostname %q: name %q, want %q", hostname, c.Name, want)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	with := func(extra ...string) []string { return append(slices.Clone(kcMinimal), extra...) }
	tests := []struct {
		name          string
		args, cmdline []string
		want          string
	}{
		{"no address", []string{"vip.etcd=http://h:2379"}, nil, `vip.address="": required`},
		{"no etcd", []string{"vip.address=192.0.2.1"}, nil, `vip.etcd="": required`},
		{"empty address", with("vip.address="), nil, `vip.address="": must not be empty`},
		{"not an ip", with("vip.address=300.1.1.1"), nil, `vip.address="300.1.1.1": not an IP address`},
		{"leading zero", with("vip.address=192.0.2.01"), nil, `vip.address="192.0.2.01": not an IP address`},
		{"v4 mapped v6", with("vip.address=::ffff:192.0.2.1"), nil, `vip.address="::ffff:192.0.2.1": IPv4-mapped IPv6 address (write the IPv4 address)`},
		{"v6 zone", with("vip.address=2001:db8::1%eth0"), nil, `vip.address="2001:db8::1%eth0": zoned address (the interface is vip.interface)`},
		{"v6 link-local", with("vip.address=fe80::1"), nil, `vip.address="fe80::1": link-local address`},
		{"v6 loopback", with("vip.address=::1"), nil, `vip.address="::1": loopback address`},
		{"v6 multicast", with("vip.address=ff02::1"), nil, `vip.address="ff02::1": multicast address`},
		{"v6 prefix too long", with("vip.address=2001:db8::1/129"), nil, `vip.address="2001:db8::1/129": prefix length out of range (1-128)`},
		{"prefix too long", with("vip.address=192.0.2.1/33"), nil, `vip.address="192.0.2.1/33": prefix length out of range (1-32)`},
		{"prefix zero", with("vip.address=192.0.2.1/0"), nil, `vip.address="192.0.2.1/0": prefix length out of range (1-32)`},
		{"prefix not a number", with("vip.address=192.0.2.1/x"), nil, `vip.address="192.0.2.1/x": bad prefix length`},
		{"prefix leading zero", with("vip.address=192.0.2.1/024"), nil, `vip.address="192.0.2.1/024": bad prefix length`},
		{"prefix empty", with("vip.address=192.0.2.1/"), nil, `vip.address="192.0.2.1/": bad prefix length`},
		{"unspecified", with("vip.address=0.0.0.0"), nil, `vip.address="0.0.0.0": unspecified address`},
		{"loopback", with("vip.address=127.0.0.2"), nil, `vip.address="127.0.0.2": loopback address`},
		{"multicast", with("vip.address=224.0.0.18"), nil, `vip.address="224.0.0.18": multicast address`},
		{"broadcast", with("vip.address=255.255.255.255"), nil, `vip.address="255.255.255.255": broadcast address`},
		{"duplicate", with("vip.address=192.0.2.1,192.0.2.1/24"), nil,
			`vip.address="192.0.2.1,192.0.2.1/24": 192.0.2.1/24: duplicate address`},
		{"second element bad", with("vip.address=192.0.2.1,300.1.1.1"), nil,
			`vip.address="192.0.2.1,300.1.1.1": 300.1.1.1: not an IP address`},
		{"empty element", with("vip.address=192.0.2.1,"), nil, `vip.address="192.0.2.1,": empty list element`},
		{"interface empty", with("vip.interface="), nil, `vip.interface="": must not be empty`},
		{"interface too long", with("vip.interface=abcdefghijklmnop"), nil,
			`vip.interface="abcdefghijklmnop": interface name longer than 15 bytes`},
		{"interface colon", with("vip.interface=eth0:1"), nil,
			`vip.interface="eth0:1": interface name must not contain '/' or ':'`},
		{"interface slash", with("vip.interface=a/b"), nil, `vip.interface="a/b": interface name must not contain '/' or ':'`},
		{"interface dot", with("vip.interface=."), nil, `vip.interface=".": not a valid interface name`},
		{"interface dotdot", with("vip.interface=.."), nil, `vip.interface="..": not a valid interface name`},
		{"interface space", with(`vip.interface="a b"`), nil, `vip.interface="a b": interface name must not contain whitespace`},
		{"etcd empty", with("vip.etcd="), nil, `vip.etcd="": must not be empty`},
		{"etcd scheme", with("vip.etcd=ftp://h:2379"), nil, `vip.etcd="ftp://h:2379": scheme must be http or https`},
		{"etcd no scheme", with("vip.etcd=h:2379"), nil, `vip.etcd="h:2379": scheme must be http or https`},
		{"etcd bare ip", with("vip.etcd=192.0.2.1:2379"), nil, `vip.etcd="192.0.2.1:2379": not a URL`},
		{"etcd no host", with("vip.etcd=http://"), nil, `vip.etcd="http://": missing host`},
		{"etcd only port", with("vip.etcd=http://:2379"), nil, `vip.etcd="http://:2379": missing host`},
		{"etcd opaque", with("vip.etcd=http:h"), nil, `vip.etcd="http:h": missing host`},
		{"etcd user", with("vip.etcd=http://u:p@h:2379"), nil, `vip.etcd="http://u:p@h:2379": user info is not supported`},
		{"etcd path", with("vip.etcd=http://h:2379/v3"), nil, `vip.etcd="http://h:2379/v3": must not have a path`},
		{"etcd query", with("vip.etcd=http://h:2379?a=1"), nil, `vip.etcd="http://h:2379?a=1": must not have a query or fragment`},
		{"etcd empty query", with("vip.etcd=http://h:2379/?"), nil, `vip.etcd="http://h:2379/?": must not have a query or fragment`},
		{"etcd fragment", with("vip.etcd=http://h#f"), nil, `vip.etcd="http://h#f": must not have a query or fragment`},
		{"etcd port zero", with("vip.etcd=http://h:0"), nil, `vip.etcd="http://h:0": port out of range`},
		{"etcd port big", with("vip.etcd=http://h:65536"), nil, `vip.etcd="http://h:65536": port out of range`},
		{"etcd second bad", with("vip.etcd=http://a:2379,b:2379"), nil,
			`vip.etcd="http://a:2379,b:2379": b:2379: scheme must be http or https`},
		{"etcd empty element", with("vip.etcd=http://a:2379,,http://b:2379"), nil,
			`vip.etcd="http://a:2379,,http://b:2379": empty list element`},
		{"cert without key", with("vip.etcd.cert=c.pem"), nil, `vip.etcd.cert="c.pem": vip.etcd.key is required with vip.etcd.cert`},
		{"key without cert", with("vip.etcd.key=k.pem"), nil, `vip.etcd.key="k.pem": vip.etcd.cert is required with vip.etcd.key`},
		{"ttl too short", with("vip.ttl=1.9"), nil, `vip.ttl="1.9": must be between 2s and 1h`},
		{"ttl too long", with("vip.ttl=2h"), nil, `vip.ttl="2h": must be between 2s and 1h`},
		{"window too short", with("vip.window=299ms"), nil, `vip.window="299ms": must be ttl or between 300ms and vip.ttl (3s)`},
		{"window past the TTL", with("vip.ttl=2", "vip.window=2.5"), nil, `vip.window="2.5": must be ttl or between 300ms and vip.ttl (2s)`},
		{"ttl word", with("vip.ttl=abc"), nil, `vip.ttl="abc": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"ttl exponent", with("vip.ttl=1e3"), nil, `vip.ttl="1e3": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"ttl empty", with("vip.ttl="), nil, `vip.ttl="": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"ttl negative", with("vip.ttl=-3s"), nil, `vip.ttl="-3s": must not be negative`},
		{"key relative", with("vip.key=vipd/x"), nil, `vip.key="vipd/x": must start with "/"`},
		{"key empty", with("vip.key="), nil, `vip.key="": must start with "/"`},
		{"key space", with(`vip.key="/a b"`), nil, `vip.key="/a b": must not contain whitespace`},
		{"key control", with("vip.key=/a\x01"), nil, `vip.key="/a\x01": must not contain control characters`},
		{"name space", with(`vip.name="a b"`), nil, `vip.name="a b": must not contain whitespace`},
		{"name control", with("vip.name=a\x7f"), nil, `vip.name="a\x7f": must be printable`},
		{"bootstrap space", with("vip.bootstrap=a b"), nil, `vip.bootstrap="a b": must not contain whitespace`},
		{"name invalid utf8", with("vip.name=a\xff"), nil, `vip.name="a\xff": must be printable`},
		{"name long", with("vip.name=" + strings.Repeat("n", 254)), nil,
			`vip.name="` + strings.Repeat("n", 254) + `": longer than 253 bytes`},
		{"garp negative", with("vip.garp=-1"), nil, `vip.garp="-1": not a whole number`},
		{"garp word", with("vip.garp=x"), nil, `vip.garp="x": not a whole number`},
		{"garp too many", with("vip.garp=1001"), nil, `vip.garp="1001": must be between 0 and 1000`},
		{"garp huge", with("vip.garp=99999999999999999999"), nil, `vip.garp="99999999999999999999": must be between 0 and 1000`},
		{"garp interval zero", with("vip.garp.interval=0"), nil,
			`vip.garp.interval="0": must be more than 0 when vip.garp is more than 1`},
		{"garp interval negative", with("vip.garp.interval=-1s"), nil, `vip.garp.interval="-1s": must not be negative`},
		{"garp refresh short", with("vip.garp.refresh=500ms"), nil, `vip.garp.refresh="500ms": must be 0 (off) or at least 1s`},
		{"probe long", with("vip.probe=11s"), nil, `vip.probe="11s": must be at most 10s`},
		{"metrics no port", with("vip.metrics=192.0.2.1"), nil, `vip.metrics="192.0.2.1": must be HOST:PORT, e.g. 127.0.0.1:9180`},
		{"metrics host name", with("vip.metrics=localhost:9180"), nil,
			`vip.metrics="localhost:9180": the host must be an IP address (or empty for every address)`},
		{"metrics port", with("vip.metrics=:70000"), nil, `vip.metrics=":70000": the port must be a number from 1 to 65535`},
		{"probe bad", with("vip.probe=20x"), nil,
			`vip.probe="20x": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"config source form", with("vip.config=vipd.conf"), nil, `vip.config="vipd.conf": must be LABEL=<label>, PARTLABEL=<name>, /dev/<device> (each optionally :/path) or an absolute file path`},
		{"config source relative path inside", with("vip.config=LABEL=x:vipd.conf"), nil, `vip.config="LABEL=x:vipd.conf": the path inside the filesystem must be absolute`},
		{"config source empty label", with("vip.config=LABEL="), nil, `vip.config="LABEL=": empty label or device name`},
		{"config timeout", with("vip.config.timeout=-1"), nil,
			`vip.config.timeout="-1": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"log", with("vip.log=syslog"), nil, `vip.log="syslog": must be stderr, kmsg or auto`},
		{"non-vip arg", with("root=/dev/sda1"), nil, `root=/dev/sda1="": not a vip.<key>=<value> word`},
		{"bare arg", with("foo"), nil, `foo="": not a vip.<key>=<value> word`},
		{"missing value arg", with("vip.name"), nil, `vip.name="": missing =value`},
		{"missing value cmdline", kcMinimal, []string{"vip.ttl"}, `vip.ttl="": missing =value`},
		{"typo", with("vip.adress=192.0.2.1"), nil, `vip.adress="192.0.2.1": unknown key (did you mean vip.address?)`},
		{"typo two edits", with("vip.tl=3"), nil, `vip.tl="3": unknown key (did you mean vip.ttl?)`},
		{"wrong separator", with("vip.garp_interval=1"), nil,
			`vip.garp_interval="1": unknown key (did you mean vip.garp.interval?)`},
		{"wrong case", with("vip.LOG=kmsg"), nil, `vip.LOG="kmsg": unknown key (did you mean vip.log?)`},
		{"unknown far", with("vip.bogus=1"), nil, `vip.bogus="1": unknown key`},
		{"bare prefix", with("vip.=1"), nil, `vip.="1": unknown key`},
		{"unknown in cmdline", kcMinimal, []string{"quiet", "vip.interfce=eth0"},
			`vip.interfce="eth0": unknown key (did you mean vip.interface?)`},
		{"nul in value", kcMinimal, []string{"vip.etcd.ca=a\x00b"}, `vip.etcd.ca="a\x00b": contains a NUL byte`},
		{"check scheme", with("vip.check=ftp://192.0.2.5:21"), nil,
			`vip.check="ftp://192.0.2.5:21": must be tcp://HOST:PORT, http://HOST:PORT/PATH or https://HOST:PORT/PATH`},
		{"check no scheme", with("vip.check=192.0.2.5:6443"), nil,
			`vip.check="192.0.2.5:6443": must be tcp://HOST:PORT, http://HOST:PORT/PATH or https://HOST:PORT/PATH`},
		{"check opaque", with("vip.check=tcp:h:80"), nil,
			`vip.check="tcp:h:80": must be tcp://HOST:PORT, http://HOST:PORT/PATH or https://HOST:PORT/PATH`},
		{"check no host", with("vip.check=http://"), nil,
			`vip.check="http://": must be tcp://HOST:PORT, http://HOST:PORT/PATH or https://HOST:PORT/PATH`},
		{"check bad escape", with("vip.check=http://h:80/%zz"), nil,
			`vip.check="http://h:80/%zz": must be tcp://HOST:PORT, http://HOST:PORT/PATH or https://HOST:PORT/PATH`},
		{"check IPv4 in brackets", with("vip.check=tcp://[192.0.2.5]:80"), nil,
			`vip.check="tcp://[192.0.2.5]:80": must be tcp://HOST:PORT, http://HOST:PORT/PATH or https://HOST:PORT/PATH`},
		{"check no port", with("vip.check=tcp://192.0.2.5"), nil, `vip.check="tcp://192.0.2.5": needs a port from 1 to 65535`},
		{"check empty port", with("vip.check=http://h:/"), nil, `vip.check="http://h:/": needs a port from 1 to 65535`},
		{"check port zero", with("vip.check=tcp://h:0"), nil, `vip.check="tcp://h:0": needs a port from 1 to 65535`},
		{"check port big", with("vip.check=tcp://h:65536"), nil, `vip.check="tcp://h:65536": needs a port from 1 to 65535`},
		{"check port huge", with("vip.check=http://[::1]:99999999999999999999/"), nil,
			`vip.check="http://[::1]:99999999999999999999/": needs a port from 1 to 65535`},
		{"check only port", with("vip.check=tcp://:80"), nil, `vip.check="tcp://:80": the host must be an IP address or a DNS name`},
		{"check bad IPv4", with("vip.check=tcp://300.1.1.1:80"), nil, `vip.check="tcp://300.1.1.1:80": the host must be an IP address or a DNS name`},
		{"check empty label", with("vip.check=tcp://a..b:80"), nil, `vip.check="tcp://a..b:80": the host must be an IP address or a DNS name`},
		{"check odd host", with("vip.check=tcp://a!b:80"), nil, `vip.check="tcp://a!b:80": the host must be an IP address or a DNS name`},
		{"check long label", with("vip.check=tcp://" + strings.Repeat("a", 64) + ":80"), nil,
			`vip.check="tcp://` + strings.Repeat("a", 64) + `:80": the host must be an IP address or a DNS name`},
		{"check IPv6 without brackets", with("vip.check=tcp://2001:db8::5:80"), nil,
			`vip.check="tcp://2001:db8::5:80": an IPv6 host must be in brackets: [2001:db8::1]:PORT`},
		{"check zone", with("vip.check=tcp://[fe80::1%25eth0]:80"), nil,
			`vip.check="tcp://[fe80::1%25eth0]:80": the host in brackets must be an IPv6 address without a zone`},
		{"check tcp path", with("vip.check=tcp://h:80/x"), nil, `vip.check="tcp://h:80/x": a tcp check has no path or query`},
		{"check tcp slash", with("vip.check=tcp://h:80/"), nil, `vip.check="tcp://h:80/": a tcp check has no path or query`},
		{"check tcp query", with("vip.check=tcp://h:80?x"), nil, `vip.check="tcp://h:80?x": a tcp check has no path or query`},
		{"check user", with("vip.check=http://u:p@h:80/"), nil, `vip.check="http://u:p@h:80/": user info is not supported`},
		{"check fragment", with("vip.check=http://h:80/x#f"), nil, `vip.check="http://h:80/x#f": must not have a fragment`},
		{"check empty fragment", with("vip.check=http://h:80/#"), nil, `vip.check="http://h:80/#": must not have a fragment`},
		{"check space", with(`vip.check="http://h:80/a b"`), nil,
			`vip.check="http://h:80/a b": must be printable ASCII without spaces (percent-encode the rest)`},
		{"check control", with("vip.check=http://h:80/\x7f"), nil,
			`vip.check="http://h:80/\x7f": must be printable ASCII without spaces (percent-encode the rest)`},
		{"check non-ASCII", with("vip.check=http://h:80/\u00e9"), nil,
			`vip.check="http://h:80/é": must be printable ASCII without spaces (percent-encode the rest)`},
		{"check https without CA", with("vip.check=https://192.0.2.5:6443/readyz"), nil,
			`vip.check="https://192.0.2.5:6443/readyz": an https check of a host other than loopback (127.0.0.0/8, ::1, localhost) needs vip.check.ca to verify it`},
		{"check https name without CA", kcMinimal, []string{"vip.check=https://api.example.com:6443"},
			`vip.check="https://api.example.com:6443": an https check of a host other than loopback (127.0.0.0/8, ::1, localhost) needs vip.check.ca to verify it`},
		{"check https localhost lookalike without CA", with("vip.check=https://localhost.example.com:6443"), nil,
			`vip.check="https://localhost.example.com:6443": an https check of a host other than loopback (127.0.0.0/8, ::1, localhost) needs vip.check.ca to verify it`},
		{"check CA without check", with("vip.check.ca=ca.pem"), nil, `vip.check.ca="ca.pem": needs an https:// vip.check (vip.check="")`},
		{"check CA with tcp", with("vip.check=tcp://h:80", "vip.check.ca=ca.pem"), nil,
			`vip.check.ca="ca.pem": needs an https:// vip.check (vip.check="tcp://h:80")`},
		{"check CA with http", with("vip.check.ca=ca.pem"), []string{"vip.check=http://h:80/"},
			`vip.check.ca="ca.pem": needs an https:// vip.check (vip.check="http://h:80/")`},
		{"check interval zero", with("vip.check.interval=0"), nil, `vip.check.interval="0": must be more than 0`},
		{"check interval 0ms", with("vip.check.interval=0ms"), nil, `vip.check.interval="0ms": must be more than 0`},
		{"check interval negative", with("vip.check.interval=-1s"), nil, `vip.check.interval="-1s": must not be negative`},
		{"check interval word", with("vip.check.interval=often"), nil,
			`vip.check.interval="often": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"check interval empty", with("vip.check.interval="), nil,
			`vip.check.interval="": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"check timeout zero", with("vip.check.timeout=0"), nil, `vip.check.timeout="0": must be more than 0`},
		{"check timeout negative", with("vip.check.timeout=-2"), nil,
			`vip.check.timeout="-2": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"check timeout word", with("vip.check.timeout=1x"), nil,
			`vip.check.timeout="1x": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"check timeout over default interval", with("vip.check.timeout=2"), nil,
			`vip.check.timeout="2": must be at most vip.check.interval (1s)`},
		{"check interval under default timeout", with("vip.check.interval=500ms"), nil,
			`vip.check.interval="500ms": must be at least vip.check.timeout (1s)`},
		{"check timeout over given interval", with("vip.check.interval=2s", "vip.check.timeout=2500ms"), nil,
			`vip.check.timeout="2500ms": must be at most vip.check.interval (2s)`},
		{"check timeout over interval from cmdline", with("vip.check.timeout=5"), []string{"vip.check.interval=4.5"},
			`vip.check.timeout="5": must be at most vip.check.interval (4.5)`},
		{"both given: the timeout is named", kcMinimal, []string{"vip.check.interval=100ms", "vip.check.timeout=200ms"},
			`vip.check.timeout="200ms": must be at most vip.check.interval (100ms)`},
		{"check rise zero", with("vip.check.rise=0"), nil, `vip.check.rise="0": must be between 1 and 100`},
		{"check rise big", with("vip.check.rise=101"), nil, `vip.check.rise="101": must be between 1 and 100`},
		{"check rise huge", with("vip.check.rise=99999999999999999999"), nil, `vip.check.rise="99999999999999999999": must be between 1 and 100`},
		{"check rise negative", with("vip.check.rise=-1"), nil, `vip.check.rise="-1": not a whole number`},
		{"check rise fraction", with("vip.check.rise=1.5"), nil, `vip.check.rise="1.5": not a whole number`},
		{"check rise empty", with("vip.check.rise="), nil, `vip.check.rise="": not a whole number`},
		{"check fall zero", with("vip.check.fall=0"), nil, `vip.check.fall="0": must be between 1 and 100`},
		{"check fall big", with("vip.check.fall=1000"), nil, `vip.check.fall="1000": must be between 1 and 100`},
		{"check fall word", with("vip.check.fall=three"), nil, `vip.check.fall="three": not a whole number`},
		{"check fall plus", with("vip.check.fall=+3"), nil, `vip.check.fall="+3": not a whole number`},
		{"check fall empty", with("vip.check.fall="), nil, `vip.check.fall="": not a whole number`},
		{"priority word", with("vip.priority=high"), nil, `vip.priority="high": not a whole number`},
		{"priority empty", with("vip.priority="), nil, `vip.priority="": not a whole number`},
		{"priority minus only", with("vip.priority=-"), nil, `vip.priority="-": not a whole number`},
		{"priority double minus", with("vip.priority=--1"), nil, `vip.priority="--1": not a whole number`},
		{"priority plus", with("vip.priority=+1"), nil, `vip.priority="+1": not a whole number`},
		{"priority fraction", with("vip.priority=1.5"), nil, `vip.priority="1.5": not a whole number`},
		{"priority space", with(`vip.priority=" 1"`), nil, `vip.priority=" 1": not a whole number`},
		{"priority too high", with("vip.priority=1000001"), nil, `vip.priority="1000001": must be between -1000000 and 1000000`},
		{"priority too low", with("vip.priority=-1000001"), nil, `vip.priority="-1000001": must be between -1000000 and 1000000`},
		{"priority huge", with("vip.priority=-99999999999999999999"), nil,
			`vip.priority="-99999999999999999999": must be between -1000000 and 1000000`},
		{"preempt delay negative", with("vip.preempt.delay=-1s"), nil, `vip.preempt.delay="-1s": must not be negative`},
		{"preempt delay word", with("vip.preempt.delay=never"), nil,
			`vip.preempt.delay="never": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"preempt delay empty", with("vip.preempt.delay="), nil,
			`vip.preempt.delay="": not a duration (seconds like 2.5, or a Go duration like 2500ms)`},
		{"check typo", with("vip.checks=tcp://h:1"), nil, `vip.checks="tcp://h:1": unknown key (did you mean vip.check?)`},
		{"first error in table order", with("vip.log=x", "vip.ttl=0"), nil, `vip.ttl="0": must be between 2s and 1h`},
		{"args syntax before cmdline", with("vip.x=1"), []string{"vip.y=2"}, `vip.x="1": unknown key`},
		{"syntax before values", with("vip.ttl=0", "vip.x=1"), nil, `vip.x="1": unknown key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.args, tt.cmdline, "node1")
			if err == nil {
				t.Fatalf("no error, want %s", tt.want)
			}
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, want *configError", err, err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

// kcFull sets every key away from its default.
var kcFull = []string{
	"vip.address=192.0.2.10/24,198.51.100.7",
	"vip.interface=eth1",
	"vip.etcd=https://192.0.2.1:2379,https://192.0.2.2:2379",
	`vip.etcd.ca="/etc/vipd/etcd ca.pem"`,
	"vip.etcd.cert=/etc/vipd/cert.pem",
	"vip.etcd.key=/etc/vipd/key.pem",
	"vip.ttl=2.5",
	"vip.key=/ha/vip",
	"vip.name=node-a",
	"vip.bootstrap=node-b",
	"vip.garp=3",
	"vip.garp.interval=250ms",
	"vip.garp.refresh=0",
	"vip.probe=1500us",
	"vip.config.timeout=90",
	"vip.log=kmsg",
	"vip.check=https://api.example.com:6443/readyz?verbose",
	`vip.check.ca="/etc/vipd/check ca.pem"`,
	"vip.check.interval=2",
	"vip.check.timeout=1500ms",
	"vip.check.rise=1",
	"vip.check.fall=5",
	"vip.priority=-7",
	"vip.preempt.delay=0",
	"vip.metrics=127.0.0.1:9180",
}

func TestWords(t *testing.T) {
	c, err := parseConfig(kcFull, nil, "ignored")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"vip.address=192.0.2.10/24,198.51.100.7/32",
		"vip.interface=eth1",
		"vip.etcd=https://192.0.2.1:2379,https://192.0.2.2:2379",
		`vip.etcd.ca="/etc/vipd/etcd ca.pem"`,
		"vip.etcd.cert=/etc/vipd/cert.pem",
		"vip.etcd.key=/etc/vipd/key.pem",
		"vip.ttl=2.5s",
		"vip.window=ttl",
		"vip.key=/ha/vip",
		"vip.name=node-a",
		"vip.bootstrap=node-b",
		"vip.garp=3",
		"vip.garp.interval=250ms",
		"vip.garp.refresh=0s",
		"vip.probe=1.5ms",
		"vip.config=",
		"vip.config.timeout=1m30s",
		"vip.log=kmsg",
		"vip.check=https://api.example.com:6443/readyz?verbose",
		`vip.check.ca="/etc/vipd/check ca.pem"`,
		"vip.check.interval=2s",
		"vip.check.timeout=1.5s",
		"vip.check.rise=1",
		"vip.check.fall=5",
		"vip.priority=-7",
		"vip.preempt.delay=0s",
		"vip.metrics=127.0.0.1:9180",
	}
	if got := c.Words(); !slices.Equal(got, want) {
		t.Errorf("Words()\n got %q\nwant %q", got, want)
	}
}

func TestWordsDefaults(t *testing.T) {
	c, err := parseConfig(kcMinimal, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"vip.address=192.0.2.10/32",
		"vip.interface=auto",
		"vip.etcd=http://192.0.2.1:2379",
		"vip.etcd.ca=",
		"vip.etcd.cert=",
		"vip.etcd.key=",
		"vip.ttl=3s",
		"vip.window=ttl",
		"vip.key=/vipd/192.0.2.10",
		"vip.name=",
		"vip.bootstrap=",
		"vip.garp=5",
		"vip.garp.interval=1s",
		"vip.garp.refresh=30s",
		"vip.probe=20ms",
		"vip.config=",
		"vip.config.timeout=30s",
		"vip.log=auto",
		"vip.check=",
		"vip.check.ca=",
		"vip.check.interval=1s",
		"vip.check.timeout=1s",
		"vip.check.rise=2",
		"vip.check.fall=3",
		"vip.priority=0",
		"vip.preempt.delay=5s",
		"vip.metrics=",
	}
	if got := c.Words(); !slices.Equal(got, want) {
		t.Errorf("Words()\n got %q\nwant %q", got, want)
	}
}

func TestQuoteKernelValue(t *testing.T) {
	tests := map[string]string{
		"":          "",
		"plain":     "plain",
		"a b":       `"a b"`,
		"a\tb":      "\"a\tb\"",
		`"lead`:     `""lead"`,
		`mid"dle"`:  `mid"dle"`,
		"l\u00e0":   "\"l\u00e0\"", // à is C3 A0: the kernel splits at the A0 byte
		"em\u2003":  "\"em\u2003\"",
		"a=b,c/d:e": "a=b,c/d:e",
	}
	for in, want := range tests {
		if got := quoteKernelValue(in); got != want {
			t.Errorf("quoteKernelValue(%q) = %q, want %q", in, got, want)
		}
	}
}

// checkWordsRoundTrip asserts that c.Words() reads back to c, both as arguments and,
// when no value holds a quote (the kernel has no escape for one), as a
// kernel command line.
func checkWordsRoundTrip(t *testing.T, c Config, hostname string) {
	t.Helper()
	words := c.Words()
	back, err := parseConfig(words, nil, hostname)
	if err != nil {
		t.Fatalf("Words() %q as args: %v", words, err)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("Words() %q as args gives\n%+v, want\n%+v", words, back, c)
	}
	for i := range settings {
		if strings.Contains(settings[i].get(&c), `"`) {
			return
		}
	}
	back, err = parseConfig(nil, splitCmdline(strings.Join(words, " ")), hostname)
	if err != nil {
		t.Fatalf("Words() %q as cmdline: %v", words, err)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("Words() %q as cmdline gives\n%+v, want\n%+v", words, back, c)
	}
}

func TestWordsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		hostname string
	}{
		{kcFull, "node1"},
		{kcMinimal, "node1"},
		{kcMinimal, ""},
		{append(slices.Clone(kcMinimal), "vip.etcd.ca=\"\"/odd path\"\"", "vip.name=\"q"), "x"},
	} {
		c, err := parseConfig(tc.args, nil, tc.hostname)
		if err != nil {
			t.Fatal(err)
		}
		checkWordsRoundTrip(t, c, tc.hostname)
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "ab", 2}, {"kitten", "sitting", 3},
		{"vip.adress", "vip.address", 1}, {"vip.tll", "vip.ttl", 1}, {"ab", "ba", 2},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// isKernelSpaceRune sees only ASCII spaces: a raw 0xA0 byte is not a rune.
func isKernelSpaceRune(r rune) bool { return r < 0x80 && isKernelSpace(byte(r)) }

func hasKernelSpaceByte(s string) bool {
	for i := range len(s) {
		if isKernelSpace(s[i]) {
			return true
		}
	}
	return false
}

// splitByFields is splitCmdline for input without quotes, where the kernel's
// rules reduce to splitting at whitespace; it is an independent model.
func splitByFields(s string) []string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	fields := strings.FieldsFunc(s, isKernelSpaceRune)
	// FieldsFunc works on runes, so split again at raw 0xA0 bytes, which the
	// kernel treats as spaces whatever surrounds them.
	var out []string
	for _, w := range fields {
		for _, p := range strings.Split(w, "\xa0") {
			if p == "--" {
				return out
			}
			if p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func FuzzSplitCmdline(f *testing.F) {
	for _, s := range []string{
		"", "root=/dev/sda1 ro quiet vip.address=192.0.2.10\n", `vip.name="a b" "vip.key=/x y" --  a`,
		`a"b c"d "e`, "\"--\" -- \t\xa0x", `"a=" =a=b "" " x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words := splitCmdline(s)
		for _, w := range words {
			if w == "" || strings.IndexByte(w, 0) >= 0 {
				t.Fatalf("splitCmdline(%q) = %q: empty word or NUL", s, words)
			}
		}
		if !strings.Contains(s, `"`) {
			if want := splitByFields(s); !slices.Equal(words, want) {
				t.Fatalf("splitCmdline(%q) = %q, whitespace model gives %q", s, words, want)
			}
		}
		// Quoting every word whole, or just its value, must give the same words
		// back, as long as no quote inside a word changes where quoting ends.
		whole := make([]string, len(words))
		value := make([]string, len(words))
		for i, w := range words {
			if strings.Contains(w, `"`) {
				return
			}
			whole[i] = `"` + w + `"`
			value[i] = whole[i]
			// The kernel ignores an '=' at the start of a word.
			if eq := strings.IndexByte(w[1:], '='); eq >= 0 && !hasKernelSpaceByte(w[:eq+1]) {
				value[i] = w[:eq+2] + `"` + w[eq+2:] + `"`
			}
		}
		for _, quoted := range [][]string{whole, value} {
			if again := splitCmdline(strings.Join(quoted, " ")); !slices.Equal(again, words) {
				t.Fatalf("splitCmdline(%q) = %q; requoted %q splits to %q", s, words, quoted, again)
			}
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add(strings.Join(kcMinimal, "\n"), "", "node1")
	f.Add(strings.Join(kcFull, "\n"), "", "node1")
	f.Add("", "quiet vip.address=192.0.2.1/24 vip.etcd=http://h:2379 vip.name=\"a b\" -- vip.x", "")
	f.Add("vip.ttl=2500ms", "vip.address=192.0.2.1,198.51.100.1 vip.etcd=https://e:1/ vip.garp=0 vip.garp.interval=0", "(none)")
	f.Add("vip.adress=1", "", "h")
	f.Add("vip.check=https://[::1]:6443/readyz?x=1\nvip.check.interval=500ms", "vip.address=192.0.2.1 vip.etcd=http://h:2379 vip.check.timeout=0.5", "h")
	f.Add("vip.check=tcp://api.example.com:6443\nvip.check.rise=1\nvip.check.fall=100", "vip.address=2001:db8::1 vip.etcd=http://h:2379 vip.priority=-1000000", "h")
	f.Add("vip.check=https://192.0.2.5:6443\nvip.check.ca=ca.pem\nvip.preempt.delay=2.5", "vip.address=192.0.2.1 vip.etcd=http://h:2379 vip.check.timeout=2", "h")
	f.Add("vip.check.ca=ca.pem", "vip.address=192.0.2.1 vip.etcd=http://h:2379 vip.check=http://h:1/ vip.priority=1000001", "")
	f.Fuzz(func(t *testing.T, args, cmdline, hostname string) {
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\n")
		}
		c, err := parseConfig(argv, splitCmdline(cmdline), hostname)
		if err != nil {
			var ce *configError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, want *configError", err, err)
			}
			if !strings.HasPrefix(ce.Key, "vip.") && !slices.Contains(argv, ce.Key) {
				t.Fatalf("error %v names neither a vip.* key nor an argument", err)
			}
			if ce.Reason == "" {
				t.Fatalf("error %v has no reason", err)
			}
			return
		}
		if len(c.Addresses) == 0 || len(c.Etcd) == 0 {
			t.Fatalf("success without required settings: %+v", c)
		}
		checkWordsRoundTrip(t, c, hostname)
	})
}
