package lab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The formats vipd promises to scripts and operators, written down here
// on their own and decoded strictly: a field vipd adds, drops or renames in
// its state file (/run/vipd/*.json) or in `vipd -status -json` fails the
// tests that read them until this file (and the README) follow.

// StateFileName is the file name vipd gives the state of the VIP group
// key: the key without its outer slashes, every character other than
// [A-Za-z0-9.-] replaced by '_', and ".json"; it lives in /run/vipd.
func StateFileName(key string) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, strings.Trim(key, "/"))
	return name + ".json"
}

// StateRecord is a state file.
type StateRecord struct {
	Version   string   `json:"version"`
	PID       int      `json:"pid"`
	Name      string   `json:"name"`
	Key       string   `json:"key"`
	Addresses []string `json:"addresses"`
	Interface string   `json:"interface"`
	Link      string   `json:"link,omitempty"`
	LinkIndex uint32   `json:"link_index,omitempty"`

	State          string    `json:"state"`
	StateSince     time.Time `json:"state_since"`
	Holder         string    `json:"holder,omitempty"`
	HeldSince      time.Time `json:"held_since,omitzero"`
	HeldBoottimeMS int64     `json:"held_boottime_ms,omitempty"`
	BootID         string    `json:"boot_id,omitempty"`
	Deadline       time.Time `json:"deadline,omitzero"`
	LastAnnounced  time.Time `json:"last_announcement,omitzero"`
	Healthy        bool      `json:"healthy"`
	LastStepDown   string    `json:"last_stepdown,omitempty"`
	SteppedDownAt  time.Time `json:"last_stepdown_at,omitzero"`

	Lease          string `json:"lease,omitempty"` // hex
	ElectionKey    string `json:"election_key,omitempty"`
	CreateRevision int64  `json:"create_revision,omitempty"`
	TTLMillis      int64  `json:"ttl_ms,omitempty"`
	Leading        bool   `json:"leading,omitempty"`

	Written time.Time `json:"written"`
}

// stateRequired are the keys every state file has.
var stateRequired = []string{"version", "pid", "name", "key", "addresses", "interface", "state", "state_since", "healthy", "written"}

// LeaseID is the record's lease as etcd numbers it (ok false without one).
func (r StateRecord) LeaseID() (int64, bool) {
	id, err := strconv.ParseInt(r.Lease, 16, 64)
	return id, err == nil && id != 0
}

// ReadState reads and strictly decodes a state file.
func ReadState(path string) (StateRecord, error) {
	var r StateRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := decodeStrict(b, &r, stateRequired); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// StatusReport is `vipd -status -json`.
type StatusReport struct {
	Key        string            `json:"key"`
	Endpoints  []string          `json:"endpoints"`
	At         time.Time         `json:"at"`
	Error      string            `json:"error,omitempty"`
	Holder     *StatusHolder     `json:"holder"` // null: nobody holds the VIP
	Candidates []StatusCandidate `json:"candidates"`
	Drained    []string          `json:"drained,omitempty"`
	Local      *StatusLocal      `json:"local,omitempty"`
	LocalError string            `json:"local_error,omitempty"`
}

var statusRequired = []string{"key", "endpoints", "at", "holder", "candidates"}

// StatusCandidate is one election entry.
type StatusCandidate struct {
	Name     string `json:"name"`
	Rank     string `json:"rank"`
	Healthy  bool   `json:"healthy"`
	Unable   bool   `json:"unable,omitempty"`
	Drained  bool   `json:"drained,omitempty"`
	Priority int    `json:"priority"`
	Unranked bool   `json:"unranked,omitempty"`
	Key      string `json:"key"`
	Lease    string `json:"lease"`
	LeaseTTL int64  `json:"lease_left_s"`
	Self     bool   `json:"this_node,omitempty"`
	Version  string `json:"version,omitempty"`         // empty: the node publishes none (before 0.1.0)
	FenceMS  int64  `json:"fence_window_ms,omitempty"` // the window it fences by in the kernel; 0: the TTL rule
}

// StatusHolder is the candidate that has claimed the VIP.
type StatusHolder struct {
	StatusCandidate
	// Left out for a holder whose entry has no since=/beat= (a vipd
	// before 6d22a5b).
	Since     time.Time `json:"since,omitzero"`
	HeldMS    *int64    `json:"held_ms,omitempty"`
	Beat      time.Time `json:"last_heartbeat,omitzero"`
	BeatAgeMS *int64    `json:"heartbeat_age_ms,omitempty"`
	TTLMS     int64     `json:"ttl_ms,omitempty"`
	Stale     bool      `json:"stale"`
}

// StatusLocal is the node's own state file as -status shows it.
type StatusLocal struct {
	Path           string    `json:"path"`
	Name           string    `json:"name"`
	State          string    `json:"state"`
	StateSince     time.Time `json:"state_since"`
	Holder         string    `json:"holder,omitempty"`
	DeadlineLeftMS *int64    `json:"deadline_left_ms,omitempty"`
	LastAnnounced  time.Time `json:"last_announcement,omitzero"`
	LastStepDown   string    `json:"last_stepdown,omitempty"`
	SteppedDownAt  time.Time `json:"last_stepdown_at,omitzero"`
	PID            int       `json:"pid"`
	PIDAlive       bool      `json:"pid_alive"`
	Written        time.Time `json:"written"`
}

// ParseStatus strictly decodes `vipd -status -json` output.
func ParseStatus(b []byte) (StatusReport, error) {
	var r StatusReport
	err := decodeStrict(b, &r, statusRequired)
	return r, err
}

// decodeStrict decodes one JSON object into v, refusing unknown fields,
// trailing data and a missing required key.
func decodeStrict(b []byte, v any, required []string) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("data after the JSON object")
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	for _, k := range required {
		if _, ok := keys[k]; !ok {
			return fmt.Errorf("no %q", k)
		}
	}
	return nil
}

// Setting is one vip.* key as `vipd -h` lists it.
type Setting struct {
	Key, Default string // Default: "required", "see meaning", "empty" or the value
}

// Settings are every vip.* key vipd has, in the order -h lists them.
var Settings = []Setting{
	{"vip.address", "required"}, {"vip.interface", "auto"}, {"vip.etcd", "required"},
	{"vip.etcd.ca", "empty"}, {"vip.etcd.cert", "empty"}, {"vip.etcd.key", "empty"},
	{"vip.ttl", "3s"}, {"vip.window", "ttl"}, {"vip.key", "see meaning"}, {"vip.name", "see meaning"}, {"vip.bootstrap", "empty"},
	{"vip.garp", "5"}, {"vip.garp.interval", "1s"}, {"vip.garp.refresh", "30s"}, {"vip.probe", "20ms"},
	{"vip.config", "empty"}, {"vip.config.timeout", "30s"}, {"vip.log", "auto"},
	{"vip.check", "empty"}, {"vip.check.ca", "empty"}, {"vip.check.interval", "1s"}, {"vip.check.timeout", "1s"},
	{"vip.check.rise", "2"}, {"vip.check.fall", "3"}, {"vip.priority", "0"}, {"vip.preempt.delay", "5s"},
	{"vip.metrics", "empty"},
}

// StatePathIn is where a vipd whose /run is run keeps the state of the
// VIP group key.
func StatePathIn(run, key string) string { return filepath.Join(run, "vipd", StateFileName(key)) }
