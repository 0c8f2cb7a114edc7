package lab

import (
	"bytes"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// The Prometheus text format as the tests read it, strictly: the root's
// unit tests parse vipd's exposition back with it, the scenarios scrape
// lab nodes with it. It is the tests' own reading of the format, not
// vipd's writer.

// ExpoSample is one sample line of the text format.
type ExpoSample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// ExpoFamily is one metric family: its HELP, TYPE and samples in order.
type ExpoFamily struct {
	Help, Type string
	Samples    []ExpoSample
}

// ParseExposition reads the Prometheus text format strictly: each family
// has its HELP and TYPE once, before its samples, and its samples are
// contiguous; a histogram's buckets are cumulative, in increasing le, and
// end in +Inf equal to _count.
func ParseExposition(text string) (map[string]*ExpoFamily, error) {
	fams := map[string]*ExpoFamily{}
	var cur string // the family whose samples may follow
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		errorf := func(f string, a ...any) error { return fmt.Errorf("line %d %q: %s", i+1, line, fmt.Sprintf(f, a...)) }
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			kw, rest, _ := strings.Cut(rest, " ")
			name, arg, _ := strings.Cut(rest, " ")
			f := fams[name]
			switch {
			case kw == "HELP" && f == nil:
				fams[name], cur = &ExpoFamily{Help: arg}, name
			case kw == "HELP":
				return nil, errorf("second HELP for %s", name)
			case kw == "TYPE" && (f == nil || name != cur):
				return nil, errorf("TYPE without its HELP just before")
			case kw == "TYPE" && f.Type != "":
				return nil, errorf("second TYPE for %s", name)
			case kw == "TYPE" && (arg == "gauge" || arg == "counter" || arg == "histogram") && len(f.Samples) == 0:
				f.Type = arg
			default:
				return nil, errorf("unexpected comment")
			}
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, errorf("%v", err)
		}
		f := fams[cur]
		if f == nil || f.Type == "" {
			return nil, errorf("sample before any HELP and TYPE")
		}
		base := s.Name
		if f.Type == "histogram" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(s.Name, suffix); ok {
					base = b
					break
				}
			}
		}
		if base != cur || (f.Type == "histogram" && base == s.Name) {
			return nil, errorf("sample of %s outside its family (after the TYPE of %s)", s.Name, cur)
		}
		f.Samples = append(f.Samples, s)
	}
	for name, f := range fams {
		if f.Type == "" || len(f.Samples) == 0 {
			return nil, fmt.Errorf("%s: TYPE %q, %d samples", name, f.Type, len(f.Samples))
		}
		if f.Type == "histogram" {
			if err := checkHistogram(name, f); err != nil {
				return nil, err
			}
		}
	}
	return fams, nil
}

// checkHistogram checks one histogram family (unlabelled apart from le).
func checkHistogram(name string, f *ExpoFamily) error {
	prevLE, prev := math.Inf(-1), -1.0
	var inf, count float64
	var haveInf, haveSum, haveCount bool
	for _, s := range f.Samples {
		switch s.Name {
		case name + "_bucket":
			if haveInf {
				return fmt.Errorf("%s: a bucket after +Inf", name)
			}
			le, err := strconv.ParseFloat(s.Labels["le"], 64)
			if err != nil || le <= prevLE || s.Value < prev {
				return fmt.Errorf("%s: bucket le=%q %v after le=%v %v: not increasing and cumulative", name, s.Labels["le"], s.Value, prevLE, prev)
			}
			prevLE, prev = le, s.Value
			if math.IsInf(le, 1) {
				haveInf, inf = true, s.Value
			}
		case name + "_sum":
			haveSum = true
		case name + "_count":
			haveCount, count = true, s.Value
		}
	}
	if !haveInf || !haveSum || !haveCount || inf != count {
		return fmt.Errorf("%s: +Inf bucket %v (%v), _sum %v, _count %v (%v): want all, +Inf = _count", name, haveInf, inf, haveSum, haveCount, count)
	}
	return nil
}

// parseSample reads NAME[{k="v",...}] VALUE.
func parseSample(line string) (ExpoSample, error) {
	s := ExpoSample{Labels: map[string]string{}}
	rest := line
	if i := strings.IndexAny(rest, "{ "); i > 0 {
		s.Name, rest = rest[:i], rest[i:]
	} else {
		return s, fmt.Errorf("no name")
	}
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for !strings.HasPrefix(rest, "}") {
			k, v, ok := strings.Cut(rest, `="`)
			if !ok || k == "" || strings.ContainsAny(k, ` ",{}`) {
				return s, fmt.Errorf("bad label at %q", rest)
			}
			rest = v
			var val strings.Builder
			for {
				if rest == "" {
					return s, fmt.Errorf("unterminated label value")
				}
				c := rest[0]
				rest = rest[1:]
				if c == '"' {
					break
				}
				if c == '\\' && rest != "" {
					c, rest = map[byte]byte{'\\': '\\', '"': '"', 'n': '\n'}[rest[0]], rest[1:]
				}
				val.WriteByte(c)
			}
			if _, dup := s.Labels[k]; dup {
				return s, fmt.Errorf("label %s twice", k)
			}
			s.Labels[k] = val.String()
			rest = strings.TrimPrefix(rest, ",")
		}
		rest = rest[1:]
	}
	v, ok := strings.CutPrefix(rest, " ")
	if !ok {
		return s, fmt.Errorf("no value")
	}
	var err error
	if s.Value, err = strconv.ParseFloat(v, 64); err != nil {
		return s, fmt.Errorf("value: %v", err)
	}
	return s, nil
}

// SampleValue is the sample of name with exactly the labels given as k, v
// pairs; ok false if there is none.
func SampleValue(fams map[string]*ExpoFamily, name string, kv ...string) (float64, bool) {
	for _, f := range fams {
	samples:
		for _, s := range f.Samples {
			if s.Name != name || len(s.Labels) != len(kv)/2 {
				continue
			}
			for i := 0; i < len(kv); i += 2 {
				if s.Labels[kv[i]] != kv[i+1] {
					continue samples
				}
			}
			return s.Value, true
		}
	}
	return 0, false
}

// InGroup is kv with the group label (vip.key) in front: the labels of a
// sample of vipd's own families.
func InGroup(group string, kv ...string) []string {
	return append([]string{"group", group}, kv...)
}

// CheckGroups checks the group label: every sample of vipd's own
// families (vipd_*, but vipd_build_info: the process's) carries
// group="group", and no other sample carries a group label.
func CheckGroups(fams map[string]*ExpoFamily, group string) error {
	for name, f := range fams {
		own := strings.HasPrefix(name, "vipd_") && name != "vipd_build_info"
		for _, s := range f.Samples {
			g, ok := s.Labels["group"]
			switch {
			case own && (!ok || g != group):
				return fmt.Errorf("%s%v: group %q, want %q", s.Name, s.Labels, g, group)
			case !own && ok:
				return fmt.Errorf("%s%v: a group label on a family of the process", s.Name, s.Labels)
			}
		}
	}
	return nil
}

// MustSampleValue is value, failing the test when the sample is missing.
func MustSampleValue(t testing.TB, fams map[string]*ExpoFamily, name string, kv ...string) float64 {
	t.Helper()
	v, ok := SampleValue(fams, name, kv...)
	if !ok {
		t.Fatalf("no sample %s%v", name, kv)
	}
	return v
}

// Promtool runs `promtool check metrics` on an exposition. Missing
// promtool fails rather than skips: the check is part of the contract.
func Promtool(body []byte) error {
	path, err := promtoolPath()
	if err != nil {
		return err
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	// Its lint findings (names, units) come with exit status 3; any
	// output at all is a finding.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("promtool check metrics: %v: %s", err, out)
	}
	return nil
}

// promtoolPath finds promtool, or says how to install it.
func promtoolPath() (string, error) {
	path, err := exec.LookPath("promtool")
	if err != nil {
		return "", fmt.Errorf("promtool not found (%v): install Debian's prometheus package (apt-get install prometheus; make test installs it through test/install-deps)", err)
	}
	return path, nil
}

// PromtoolRules runs `promtool check rules` on a rule file and, when
// tests is not empty, `promtool test rules` on that unit-test file.
// Missing promtool fails, as for Promtool.
func PromtoolRules(rules, tests string) error {
	path, err := promtoolPath()
	if err != nil {
		return err
	}
	runs := [][]string{{"check", "rules", rules}}
	if tests != "" {
		runs = append(runs, []string{"test", "rules", tests})
	}
	for _, args := range runs {
		if out, err := exec.Command(path, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("promtool %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}
