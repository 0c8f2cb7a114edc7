package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Config is the effective configuration, grouped by what reads it: each
// group is embedded, so cfg.TTL reads as before, and a part that needs one
// group (the health check) is handed that group alone.
type Config struct {
	groupConfig
	etcdConfig
	announceConfig
	healthConfig
	runConfig
}

// groupConfig names the VIP group and this node's place in it.
type groupConfig struct {
	Addresses []netip.Prefix // each VIP; Addr() unmasked as given; Bits() = given prefix or 32 (IPv4)
	Interface string         // name or "auto"
	Key       string
	Name      string // "" means: the caller uses the interface MAC at runtime
	Bootstrap string // vip.bootstrap: the node that may hold the VIP before etcd answers; "" off
}

// etcdConfig is how to reach etcd and the lease the election runs on.
type etcdConfig struct {
	Etcd                      []string // endpoint URLs as given
	EtcdCA, EtcdCert, EtcdKey string
	TTL                       time.Duration
	// Window is how long the holder's heartbeat may stand still before
	// the others take over, when its kernel fence (bpffence.go) is in
	// force; 0 means the TTL. Without the fence the TTL rule applies.
	Window time.Duration
}

// announceConfig is the probe before a take and the announcements after.
type announceConfig struct {
	Garp         int
	GarpInterval time.Duration
	GarpRefresh  time.Duration
	Probe        time.Duration
}

// healthConfig is the health check and the rank it feeds.
type healthConfig struct {
	Check                string // health check URL as given; "" is none (always healthy)
	CheckCA              string // PEM file that verifies an https check
	CheckInterval        time.Duration
	CheckTimeout         time.Duration
	CheckRise, CheckFall int
	Priority             int
	PreemptDelay         time.Duration
}

// runConfig is where the configuration comes from and where the process
// reports.
type runConfig struct {
	ConfigSource  string
	ConfigTimeout time.Duration
	Log           string // "stderr", "kmsg" or "auto"
	Metrics       string // HOST:PORT for /metrics; "" is off
}

// configError is bad input: it names the key, the value and what is wrong.
type configError struct{ Key, Value, Reason string }

func (e *configError) Error() string {
	return fmt.Sprintf("%s=%q: %s", e.Key, e.Value, e.Reason)
}

// splitCmdline splits a kernel command line into words with the kernel's quoting
// rules (lib/cmdline.c next_arg), stopping at a lone "--" (the rest belongs to init).
// A word is "param=value" or "param" (no '=': the kernel's NULL value). Words
// that the kernel reduces to an empty param with no value carry nothing and are
// dropped.
func splitCmdline(s string) []string {
	// The kernel sees a C string: nothing after a NUL exists for it.
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	var words []string
	for s = skipKernelSpaces(s); s != ""; s = skipKernelSpaces(s) {
		n := kernelWordLen(s)
		param, val, hasVal := kernelUnquote(s[:n])
		if n < len(s) {
			n++ // next_arg consumes the separator itself
		}
		s = s[n:]
		// parse_args stops only at a valueless "--"; "--=x" is an ordinary word.
		if !hasVal && param == "--" {
			break
		}
		switch {
		case hasVal:
			words = append(words, param+"="+val)
		case param != "":
			words = append(words, param)
		}
	}
	return words
}

// isKernelSpace is the kernel's isspace() (lib/ctype.c), which, unlike C's
// locale-free one, also counts Latin-1 NBSP (0xA0): a raw 0xA0 byte splits words.
func isKernelSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r') || c == 0xA0
}

func skipKernelSpaces(s string) string {
	for s != "" && isKernelSpace(s[0]) {
		s = s[1:]
	}
	return s
}

// kernelWordLen is next_arg's scan: the word ends at whitespace outside quotes.
// A leading quote is just the first toggle, exactly as next_arg's in_quote=1.
func kernelWordLen(s string) int {
	inQuote := false
	for i := 0; i < len(s); i++ {
		if isKernelSpace(s[i]) && !inQuote {
			return i
		}
		if s[i] == '"' {
			inQuote = !inQuote
		}
	}
	return len(s)
}

// kernelUnquote applies next_arg's quote stripping to one already delimited word.
// It replays the kernel's in-place NUL writes on a copy, because the order of
// those writes decides which quotes survive (e.g. `"a="` gives a="" not a=`"`).
func kernelUnquote(w string) (param, val string, hasVal bool) {
	quoted := strings.HasPrefix(w, `"`)
	b := []byte(w)
	if quoted {
		b = b[1:]
	}
	n := len(b)
	// next_arg's "equals == 0" test means an '=' at index 0 never counts.
	eq := -1
	if n > 1 {
		if j := strings.IndexByte(string(b[1:]), '='); j >= 0 {
			eq = j + 1
		}
	}
	valStart := 0
	if eq > 0 {
		b[eq] = 0
		valStart = eq + 1
		if valStart < n && b[valStart] == '"' {
			valStart++
			if b[n-1] == '"' {
				b[n-1] = 0
			}
		}
	}
	if quoted && n > 0 && b[n-1] == '"' {
		b[n-1] = 0
	}
	param = cString(b)
	if eq > 0 {
		return param, cString(b[valStart:]), true
	}
	return param, "", false
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// setting is one vip.* key. The table below fixes the order in which keys are
// validated (so the first error is deterministic) and printed by Words.
type setting struct {
	key      string
	def      string // used when no source gives the key
	required bool
	// defFunc, when set, replaces def for defaults that depend on other settings.
	defFunc func(c *Config, hostname string) string
	// set parses and stores v; a plain error is the reason, a *configError
	// (for rules that tie two keys together) is returned as is.
	set func(c *Config, v string) error
	get func(c *Config) string
	// usage is the one-line meaning that -h prints.
	usage string
}

var settings = []setting{
	{key: "vip.address", required: true, set: setAddresses, get: func(c *Config) string {
		s := make([]string, len(c.Addresses))
		for i, p := range c.Addresses {
			s[i] = p.String()
		}
		return strings.Join(s, ",")
	}, usage: "the shared address(es), comma-separated, IPv4 and/or IPv6, optional /prefix"},
	{key: "vip.interface", def: "auto", set: setInterface, get: func(c *Config) string { return c.Interface }, usage: "interface name, or auto: the one with an address in the subnet of the first VIP"},
	{key: "vip.etcd", required: true, set: setEtcd, get: func(c *Config) string { return strings.Join(c.Etcd, ",") }, usage: "etcd endpoints, comma-separated http:// or https:// URLs"},
	{key: "vip.etcd.ca", set: func(c *Config, v string) error { c.EtcdCA = v; return nil },
		get: func(c *Config) string { return c.EtcdCA }, usage: "PEM of the CA that signs etcd's certificate (relative: inside the config partition)"},
	{key: "vip.etcd.cert", set: func(c *Config, v string) error { c.EtcdCert = v; return nil },
		get: func(c *Config) string { return c.EtcdCert }, usage: "PEM client certificate for etcd (mutual TLS)"},
	{key: "vip.etcd.key", set: setEtcdKey, get: func(c *Config) string { return c.EtcdKey }, usage: "PEM key of that certificate"},
	{key: "vip.ttl", def: "3s", set: setTTL, get: func(c *Config) string { return c.TTL.String() }, usage: "lease TTL: seconds (3) or a duration (2500ms), 2s to 1h"},
	{key: "vip.window", def: "ttl", set: setWindow, get: func(c *Config) string {
		if c.Window == 0 {
			return "ttl"
		}
		return c.Window.String()
	}, usage: "with the kernel fence: how long the holder's heartbeat may stand still before another node takes over, 300ms up to vip.ttl; ttl: the TTL"},
	{key: "vip.key", defFunc: defaultKey, set: setKey, get: func(c *Config) string { return c.Key }, usage: "election key prefix in etcd (default /vipd/<first address>)"},
	{key: "vip.name", defFunc: usableHostname, set: setName, get: func(c *Config) string { return c.Name }, usage: "this node's unique name in the election (default: hostname, else the interface MAC)"},
	{key: "vip.bootstrap", set: setBootstrap, get: func(c *Config) string { return c.Bootstrap }, usage: "the vip.name of the one node that may hold the VIP before any etcd has answered since boot (probe first); empty: off"},
	{key: "vip.garp", def: "5", set: setGarp, get: func(c *Config) string { return strconv.Itoa(c.Garp) }, usage: "announcements (gratuitous ARP, unsolicited NA) sent on takeover"},
	{key: "vip.garp.interval", def: "1s", set: setGarpInterval, get: func(c *Config) string { return c.GarpInterval.String() }, usage: "spacing of those announcements"},
	{key: "vip.garp.refresh", def: "30s", set: setGarpRefresh, get: func(c *Config) string { return c.GarpRefresh.String() }, usage: "re-announce while holding the address; 0 disables"},
	{key: "vip.probe", def: "20ms", set: setProbe, get: func(c *Config) string { return c.Probe.String() }, usage: "probe-before-take listening window; 0 disables"},
	{key: "vip.config", set: setConfigSource, get: func(c *Config) string { return c.ConfigSource }, usage: "config source: LABEL=, PARTLABEL= or /dev/<node> [:/path], or a file path"},
	{key: "vip.config.timeout", def: "30s", set: setConfigTimeout, get: func(c *Config) string { return c.ConfigTimeout.String() }, usage: "how long to wait for the config device to appear"},
	{key: "vip.log", def: "auto", set: setLog, get: func(c *Config) string { return c.Log }, usage: "stderr, kmsg or auto (kmsg only when stderr is /dev/console, /dev/null or closed)"},
	{key: "vip.check", set: setCheck, get: func(c *Config) string { return c.Check }, usage: "health check: tcp://HOST:PORT, http(s)://HOST:PORT/PATH (2xx = healthy); empty: always healthy"},
	{key: "vip.check.ca", set: setCheckCA, get: func(c *Config) string { return c.CheckCA }, usage: "PEM to verify an https check (without it only a loopback host is allowed)"},
	{key: "vip.check.interval", def: "1s", set: setCheckInterval, get: func(c *Config) string { return c.CheckInterval.String() }, usage: "how often the check runs"},
	{key: "vip.check.timeout", def: "1s", set: setCheckTimeout, get: func(c *Config) string { return c.CheckTimeout.String() }, usage: "how long one check may take (at most the interval)"},
	{key: "vip.check.rise", def: "2", set: setCheckRise, get: func(c *Config) string { return strconv.Itoa(c.CheckRise) }, usage: "passed checks in a row that make the node healthy"},
	{key: "vip.check.fall", def: "3", set: setCheckFall, get: func(c *Config) string { return strconv.Itoa(c.CheckFall) }, usage: "failed checks in a row that make the node unhealthy"},
	{key: "vip.priority", def: "0", set: setPriority, get: func(c *Config) string { return strconv.Itoa(c.Priority) }, usage: "integer; among equally healthy nodes the higher one holds the VIP"},
	{key: "vip.preempt.delay", def: "5s", set: setPreemptDelay, get: func(c *Config) string { return c.PreemptDelay.String() }, usage: "how long a higher priority must stand, and a new leader keeps the VIP, before a handover"},
	{key: "vip.metrics", set: setMetrics, get: func(c *Config) string { return c.Metrics }, usage: "HOST:PORT serving Prometheus text on /metrics and liveness on /healthz; empty: off"},
}

func lookupSetting(key string) *setting {
	for i := range settings {
		if settings[i].key == key {
			return &settings[i]
		}
	}
	return nil
}

// parseConfig builds the Config from words given as program arguments and words
// from the kernel command line (already split). Precedence: args > cmdline > defaults.
// hostname is the default for vip.name ("" if unknown).
//
// Arguments get the same per-word quote stripping as the kernel applies
// (vip.name="a b"), so that Words() output works both on the kernel command
// line and as arguments; cmdline words are already unquoted by splitCmdline.
func parseConfig(args, cmdline []string, hostname string) (Config, error) {
	c, _, err := parseConfigSources(args, cmdline, nil, hostname)
	return c, err
}

// Where a setting came from, for -check.
const (
	fromArgument   = "argument"
	fromCmdline    = "kernel command line"
	fromConfigFile = "config file"
	fromDefault    = "default"
)

// parseConfigSources is parseConfig with the words of a config file
// (precedence: args > cmdline > file > defaults). It also reports where
// each setting came from.
func parseConfigSources(args, cmdline, file []string, hostname string) (Config, map[string]string, error) {
	var layers [3]map[string]string
	for i, ws := range [][]string{args, cmdline, file} {
		m, err := collectWords(ws, i == 0)
		if err != nil {
			return Config{}, nil, err
		}
		layers[i] = m
	}
	names := [3]string{fromArgument, fromCmdline, fromConfigFile}
	var c Config
	sources := make(map[string]string, len(settings))
	values := make(map[string]string, len(settings))
	for i := range settings {
		s := &settings[i]
		v, src := "", ""
		for j, m := range layers {
			if val, ok := m[s.key]; ok {
				v, src = val, names[j]
				break
			}
		}
		if src == "" {
			if s.required {
				return Config{}, nil, &configError{Key: s.key, Reason: "required"}
			}
			v, src = s.def, fromDefault
			if s.defFunc != nil {
				v = s.defFunc(&c, hostname)
			}
		}
		if err := applySetting(&c, s, v); err != nil {
			return Config{}, nil, err
		}
		sources[s.key] = src
		values[s.key] = v
	}
	if err := checkCheckTimes(&c, values, sources); err != nil {
		return Config{}, nil, err
	}
	return c, sources, nil
}

// checkCheckTimes requires vip.check.timeout <= vip.check.interval: a check
// that may outlast its interval would overlap the next one. Unlike the rules
// that setters check against keys earlier in the table, it needs to know
// which of the two was set: the error names the one the operator gave (the
// timeout when both were given), with both values.
func checkCheckTimes(c *Config, values, sources map[string]string) error {
	if c.CheckTimeout <= c.CheckInterval {
		return nil
	}
	iv, tv := values["vip.check.interval"], values["vip.check.timeout"]
	if sources["vip.check.timeout"] == fromDefault {
		return &configError{Key: "vip.check.interval", Value: iv,
			Reason: fmt.Sprintf("must be at least vip.check.timeout (%s)", tv)}
	}
	return &configError{Key: "vip.check.timeout", Value: tv,
		Reason: fmt.Sprintf("must be at most vip.check.interval (%s)", iv)}
}

// bootstrapConfig reads, from arguments and the kernel command line only,
// the settings needed before the config source can be read: the source
// itself, how long to wait for it, and where to log while waiting.
func bootstrapConfig(args, cmdline []string) (Config, error) {
	fromArgs, err := collectWords(args, true)
	if err != nil {
		return Config{}, err
	}
	fromCmd, err := collectWords(cmdline, false)
	if err != nil {
		return Config{}, err
	}
	var c Config
	for _, key := range []string{"vip.config", "vip.config.timeout", "vip.log"} {
		s := lookupSetting(key)
		v, ok := fromArgs[key]
		if !ok {
			v, ok = fromCmd[key]
		}
		if !ok {
			v = s.def
		}
		if err := applySetting(&c, s, v); err != nil {
			return Config{}, err
		}
	}
	return c, nil
}

func applySetting(c *Config, s *setting, v string) error {
	if strings.IndexByte(v, 0) >= 0 {
		return &configError{Key: s.key, Value: v, Reason: "contains a NUL byte"}
	}
	err := s.set(c, v)
	if err == nil {
		return nil
	}
	var ce *configError
	if errors.As(err, &ce) {
		return ce
	}
	return &configError{Key: s.key, Value: v, Reason: err.Error()}
}

// collectWords maps each vip.* key to its last value in words. Only arguments
// must all be vip.* words: the kernel command line is shared with everyone else.
func collectWords(words []string, isArgs bool) (map[string]string, error) {
	m := make(map[string]string)
	for _, raw := range words {
		w := raw
		if isArgs {
			param, val, hasVal := kernelUnquote(raw)
			w = param
			if hasVal {
				w += "=" + val
			}
		}
		if !strings.HasPrefix(w, "vip.") {
			if isArgs {
				return nil, &configError{Key: raw, Reason: "not a vip.<key>=<value> word"}
			}
			continue
		}
		key, val, ok := strings.Cut(w, "=")
		if !ok {
			return nil, &configError{Key: key, Reason: "missing =value"}
		}
		if lookupSetting(key) == nil {
			return nil, &configError{Key: key, Value: val, Reason: unknownKeyReason(key)}
		}
		m[key] = val
	}
	return m, nil
}

// unknownKeyReason suggests the nearest known key, because an unknown key is
// almost always a typo of a real one.
func unknownKeyReason(key string) string {
	best, bestDist := "", 3
	for _, s := range settings {
		if d := editDistance(strings.ToLower(key), s.key); d < bestDist {
			best, bestDist = s.key, d
		}
	}
	if best == "" {
		return "unknown key"
	}
	return "unknown key (did you mean " + best + "?)"
}

// editDistance is the Levenshtein distance in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Words returns the effective configuration as "vip.key=value" lines in a fixed
// order (every key, defaults included), values quoted kernel-style ("a b") when they
// contain whitespace; used by `vipd -check`. Durations printed with time.Duration.String.
func (c Config) Words() []string {
	lines := make([]string, len(settings))
	for i := range settings {
		lines[i] = settings[i].key + "=" + quoteKernelValue(settings[i].get(&c))
	}
	return lines
}

// WordsWithSources is Words with where each setting came from, as a
// comment (so the lines still read as a config file).
func (c Config) WordsWithSources(sources map[string]string) []string {
	lines := c.Words()
	for i := range settings {
		if src := sources[settings[i].key]; src != "" {
			lines[i] += " # " + src
		}
	}
	return lines
}

// quoteKernelValue quotes v when the kernel would otherwise split it or strip
// a leading quote from it; `key="v"` always unquotes to exactly v.
func quoteKernelValue(v string) string {
	// A raw 0xA0 byte splits a kernel word even inside a UTF-8 sequence.
	if strings.HasPrefix(v, `"`) || hasSpace(v) || strings.IndexByte(v, 0xA0) >= 0 {
		return `"` + v + `"`
	}
	return v
}

// hasSpace reports whitespace as a person reads it (Unicode) or as the kernel
// splits words.
func hasSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < utf8.RuneSelf && isKernelSpace(s[i]) {
			return true
		}
	}
	return strings.IndexFunc(s, unicode.IsSpace) >= 0
}

// forEachElement runs f on each element of a comma-separated list, naming the
// element in the reason when the list has more than one.
func forEachElement(v string, f func(string) error) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	elems := strings.Split(v, ",")
	for _, e := range elems {
		if e == "" {
			return errors.New("empty list element")
		}
		if err := f(e); err != nil {
			if len(elems) > 1 {
				return fmt.Errorf("%s: %w", e, err)
			}
			return err
		}
	}
	return nil
}

func setAddresses(c *Config, v string) error {
	var list []netip.Prefix
	err := forEachElement(v, func(e string) error {
		p, err := parseVIP(e)
		if err != nil {
			return err
		}
		for _, q := range list {
			if q.Addr() == p.Addr() {
				return errors.New("duplicate address")
			}
		}
		list = append(list, p)
		return nil
	})
	if err != nil {
		return err
	}
	c.Addresses = list
	return nil
}

// parseVIP parses "IP" or "IP/prefix", keeping the address unmasked because it
// is the address to add, not a network.
func parseVIP(s string) (netip.Prefix, error) {
	addrPart, bitsPart, hasBits := strings.Cut(s, "/")
	addr, err := netip.ParseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, errors.New("not an IP address")
	}
	switch {
	case addr.Is4In6():
		return netip.Prefix{}, errors.New("IPv4-mapped IPv6 address (write the IPv4 address)")
	case addr.Zone() != "":
		return netip.Prefix{}, errors.New("zoned address (the interface is vip.interface)")
	case addr.IsLinkLocalUnicast():
		return netip.Prefix{}, errors.New("link-local address")
	case addr.IsUnspecified():
		return netip.Prefix{}, errors.New("unspecified address")
	case addr.IsLoopback():
		return netip.Prefix{}, errors.New("loopback address")
	case addr.IsMulticast():
		return netip.Prefix{}, errors.New("multicast address")
	case addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Prefix{}, errors.New("broadcast address")
	}
	bits := addr.BitLen()
	if hasBits {
		if bits, err = parsePrefixLen(bitsPart, addr.BitLen()); err != nil {
			return netip.Prefix{}, err
		}
	}
	return netip.PrefixFrom(addr, bits), nil
}

// parsePrefixLen accepts 1..max in plain decimal; /0 would make the VIP's
// subnet route swallow all traffic.
func parsePrefixLen(s string, max int) (int, error) {
	if s == "" || len(s) > 3 || strings.Trim(s, "0123456789") != "" || (len(s) > 1 && s[0] == '0') {
		return 0, errors.New("bad prefix length")
	}
	n, _ := strconv.Atoi(s)
	if n < 1 || n > max {
		return 0, fmt.Errorf("prefix length out of range (1-%d)", max)
	}
	return n, nil
}

func setInterface(c *Config, v string) error {
	if v != "auto" {
		if err := validInterfaceName(v); err != nil {
			return err
		}
	}
	c.Interface = v
	return nil
}

// validInterfaceName follows the kernel's dev_valid_name, so that a name it
// would never accept is reported now rather than waited for forever.
func validInterfaceName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 15:
		return errors.New("interface name longer than 15 bytes")
	case s == "." || s == "..":
		return errors.New("not a valid interface name")
	case strings.ContainsAny(s, "/:"):
		return errors.New("interface name must not contain '/' or ':'")
	}
	for i := 0; i < len(s); i++ {
		if isKernelSpace(s[i]) {
			return errors.New("interface name must not contain whitespace")
		}
	}
	return nil
}

func setEtcd(c *Config, v string) error {
	var list []string
	err := forEachElement(v, func(e string) error {
		if err := validEndpoint(e); err != nil {
			return err
		}
		list = append(list, e)
		return nil
	})
	if err != nil {
		return err
	}
	c.Etcd = list
	return nil
}

// validEndpoint accepts what the etcd client dials: a scheme and host[:port]
// only; anything more would be silently ignored by the client.
func validEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("scheme must be http or https")
	case u.Opaque != "" || u.Host == "":
		return errors.New("missing host")
	case u.User != nil:
		return errors.New("user info is not supported")
	case strings.ContainsAny(s, "?#"):
		return errors.New("must not have a query or fragment")
	case u.Path != "" && u.Path != "/":
		return errors.New("must not have a path")
	case u.Hostname() == "":
		return errors.New("missing host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errors.New("port out of range")
		}
	}
	return nil
}

// setEtcdKey also checks the pair, because a client certificate without its
// key (or the reverse) cannot be loaded.
func setEtcdKey(c *Config, v string) error {
	if c.EtcdCert != "" && v == "" {
		return &configError{Key: "vip.etcd.cert", Value: c.EtcdCert, Reason: "vip.etcd.key is required with vip.etcd.cert"}
	}
	if v != "" && c.EtcdCert == "" {
		return errors.New("vip.etcd.cert is required with vip.etcd.key")
	}
	c.EtcdKey = v
	return nil
}

// parseSeconds reads a plain decimal number as seconds, else a Go duration.
func parseSeconds(v string) (time.Duration, error) {
	if isDecimal(v) {
		v += "s"
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New("not a duration (seconds like 2.5, or a Go duration like 2500ms)")
	}
	if d < 0 {
		return 0, errors.New("must not be negative")
	}
	return d, nil
}

// isDecimal matches digits with an optional fraction, and nothing that
// strconv.ParseFloat would also take (exponents, signs, inf).
func isDecimal(s string) bool {
	whole, frac, hasFrac := strings.Cut(s, ".")
	digits := func(x string) bool { return x != "" && strings.Trim(x, "0123456789") == "" }
	return digits(whole) && (!hasFrac || digits(frac))
}

func setTTL(c *Config, v string) error {
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	// Below 2 s the time between a renewal and the step-down deadline
	// (TTL minus a 500 ms margin) is under the kernel's one-second address
	// lifetime granularity, so the address could never be added safely.
	if d < 2*time.Second || d > time.Hour {
		return errors.New("must be between 2s and 1h")
	}
	c.TTL = d
	return nil
}

// setWindow reads vip.window, which comes after vip.ttl in the table.
// Below 300 ms a heartbeat every quarter of the window (75 ms) leaves etcd
// less than 200 ms to answer before the holder must step down; above the
// TTL the lease would end first anyway.
func setWindow(c *Config, v string) error {
	if v == "ttl" {
		c.Window = 0
		return nil
	}
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	if d < minWindow || d > c.TTL {
		return fmt.Errorf("must be ttl or between %v and vip.ttl (%v)", minWindow, c.TTL)
	}
	c.Window = d
	return nil
}

const minWindow = 300 * time.Millisecond

func defaultKey(c *Config, _ string) string {
	return "/vipd/" + c.Addresses[0].Addr().String()
}

func setKey(c *Config, v string) error {
	switch {
	case !strings.HasPrefix(v, "/"):
		return errors.New(`must start with "/"`)
	case hasSpace(v):
		return errors.New("must not contain whitespace")
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return errors.New("must not contain control characters")
	}
	c.Key = v
	return nil
}

// usableHostname drops hostnames that are the same on every unconfigured machine
// (the kernel's "(none)", a distribution's "localhost"): two nodes with one
// identity would both believe they hold the lease, so the MAC is safer.
func usableHostname(_ *Config, hostname string) string {
	switch strings.ToLower(hostname) {
	case "(none)", "localhost", "localhost.localdomain":
		return ""
	}
	if validName(hostname) != nil {
		return ""
	}
	return hostname
}

// setName accepts an explicit empty value as "use the interface MAC", so that
// Words() of a Config without a name reads back to the same Config.
func setBootstrap(c *Config, v string) error {
	if v != "" {
		if err := validName(v); err != nil {
			return err
		}
	}
	c.Bootstrap = v
	return nil
}

func setName(c *Config, v string) error {
	if v != "" {
		if err := validName(v); err != nil {
			return err
		}
	}
	c.Name = v
	return nil
}

func validName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 253:
		return errors.New("longer than 253 bytes")
	case hasSpace(s):
		return errors.New("must not contain whitespace")
	case !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return errors.New("must be printable")
	}
	return nil
}

func setGarp(c *Config, v string) error {
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return errors.New("not a whole number")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n > 1000 {
		return errors.New("must be between 0 and 1000")
	}
	c.Garp = n
	return nil
}

func setGarpInterval(c *Config, v string) error {
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	if d == 0 && c.Garp > 1 {
		return errors.New("must be more than 0 when vip.garp is more than 1")
	}
	c.GarpInterval = d
	return nil
}

func setGarpRefresh(c *Config, v string) error {
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	if d != 0 && d < time.Second {
		return errors.New("must be 0 (off) or at least 1s")
	}
	c.GarpRefresh = d
	return nil
}

func setProbe(c *Config, v string) error {
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	if d > 10*time.Second {
		return errors.New("must be at most 10s")
	}
	c.Probe = d
	return nil
}

func setConfigSource(c *Config, v string) error {
	if v != "" {
		if _, err := parseConfigSpec(v); err != nil {
			return err
		}
	}
	c.ConfigSource = v
	return nil
}

func setConfigTimeout(c *Config, v string) error {
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	c.ConfigTimeout = d
	return nil
}

func setLog(c *Config, v string) error {
	switch v {
	case "stderr", "kmsg", "auto":
		c.Log = v
		return nil
	}
	return errors.New("must be stderr, kmsg or auto")
}

// setMetrics takes HOST:PORT with an IP literal (or no host: every
// address). A name would need a resolver, which an initramfs lacks.
func setMetrics(c *Config, v string) error {
	if v == "" {
		c.Metrics = ""
		return nil
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("must be HOST:PORT, e.g. 127.0.0.1:9180")
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return errors.New("the host must be an IP address (or empty for every address)")
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("the port must be a number from 1 to 65535")
	}
	c.Metrics = v
	return nil
}

// setCheck takes the health check URL; parseCheckTarget is shared with the
// checker, so that what is accepted here is exactly what it can run.
func setCheck(c *Config, v string) error {
	if v != "" {
		if _, err := parseCheckTarget(v); err != nil {
			return err
		}
	}
	c.Check = v
	return nil
}

// setCheckCA ties the CA to the check (vip.check comes first in the table):
// a CA with nothing to verify is a mistake, and an https check of another
// host without one would trust whoever answers.
func setCheckCA(c *Config, v string) error {
	https := strings.HasPrefix(c.Check, "https://")
	if v != "" && !https {
		return fmt.Errorf("needs an https:// vip.check (vip.check=%q)", c.Check)
	}
	if v == "" && https {
		t, _ := parseCheckTarget(c.Check) // validated by setCheck
		if !t.loopback() {
			return &configError{Key: "vip.check", Value: c.Check,
				Reason: "an https check of a host other than loopback (127.0.0.0/8, ::1, localhost) needs vip.check.ca to verify it"}
		}
	}
	c.CheckCA = v
	return nil
}

// positiveSeconds is parseSeconds without 0.
func positiveSeconds(v string) (time.Duration, error) {
	d, err := parseSeconds(v)
	if err != nil {
		return 0, err
	}
	if d == 0 {
		return 0, errors.New("must be more than 0")
	}
	return d, nil
}

func setCheckInterval(c *Config, v string) error {
	d, err := positiveSeconds(v)
	if err != nil {
		return err
	}
	c.CheckInterval = d
	return nil
}

func setCheckTimeout(c *Config, v string) error {
	d, err := positiveSeconds(v)
	if err != nil {
		return err
	}
	c.CheckTimeout = d
	return nil
}

// checkCount reads vip.check.rise and vip.check.fall: 1 to 100; more
// consecutive results would take minutes to change the health state.
func checkCount(v string) (int, error) {
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, errors.New("not a whole number")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100 {
		return 0, errors.New("must be between 1 and 100")
	}
	return n, nil
}

func setCheckRise(c *Config, v string) error {
	n, err := checkCount(v)
	if err != nil {
		return err
	}
	c.CheckRise = n
	return nil
}

func setCheckFall(c *Config, v string) error {
	n, err := checkCount(v)
	if err != nil {
		return err
	}
	c.CheckFall = n
	return nil
}

// maxPriority bounds vip.priority: a million levels are more than any
// cluster needs, and the rank published in etcd stays short and far from
// integer overflow in whatever reads it.
const maxPriority = 1000000

func setPriority(c *Config, v string) error {
	digits := strings.TrimPrefix(v, "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return errors.New("not a whole number")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < -maxPriority || n > maxPriority {
		return fmt.Errorf("must be between %d and %d", -maxPriority, maxPriority)
	}
	c.Priority = n
	return nil
}

func setPreemptDelay(c *Config, v string) error {
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	c.PreemptDelay = d
	return nil
}
