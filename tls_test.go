package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"vipd/test/lab"
)

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
