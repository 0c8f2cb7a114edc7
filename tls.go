package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
)

// tlsKeys are the settings that name etcd TLS files.
var tlsKeys = []string{"vip.etcd.ca", "vip.etcd.cert", "vip.etcd.key"}

// tlsPaths are the TLS files the configuration names, by setting: etcd's,
// and the CA of an https health check (checkTLS).
func tlsPaths(c Config) map[string]string {
	paths := map[string]string{}
	for key, p := range map[string]string{"vip.etcd.ca": c.EtcdCA, "vip.etcd.cert": c.EtcdCert, "vip.etcd.key": c.EtcdKey, "vip.check.ca": c.CheckCA} {
		if p != "" {
			paths[key] = p
		}
	}
	return paths
}

// readTLSFiles reads the TLS files named outside any config source.
func readTLSFiles(c Config) (map[string]loadedFile, error) {
	files := map[string]loadedFile{}
	for key, p := range tlsPaths(c) {
		f, err := readLoadedFile(p)
		if err != nil {
			return nil, &configError{Key: key, Value: p, Reason: err.Error()}
		}
		f.path = p
		files[key] = f
	}
	return files, nil
}

// etcdTLS builds the etcd client's TLS configuration from files already in
// memory (a config partition is unmounted by now). It returns nil for plain
// http endpoints without TLS settings.
func etcdTLS(c etcdConfig, files map[string]loadedFile, log *logger) (*tls.Config, error) {
	https := 0
	for _, e := range c.Etcd {
		if strings.HasPrefix(e, "https://") {
			https++
		}
	}
	etcdFiles := 0
	for _, key := range tlsKeys {
		if _, ok := files[key]; ok {
			etcdFiles++
		}
	}
	if https == 0 && etcdFiles == 0 {
		return nil, nil
	}
	if https != len(c.Etcd) {
		return nil, &configError{Key: "vip.etcd", Value: strings.Join(c.Etcd, ","),
			Reason: "mixes http:// and TLS: with vip.etcd.ca/cert/key every endpoint must be https://"}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca, ok := files["vip.etcd.ca"]; ok {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca.data) {
			return nil, &configError{Key: "vip.etcd.ca", Value: ca.path, Reason: "no PEM certificate in it"}
		}
		cfg.RootCAs = pool
	}
	cert, hasCert := files["vip.etcd.cert"]
	key, hasKey := files["vip.etcd.key"]
	if hasCert && hasKey {
		pair, err := tls.X509KeyPair(cert.data, key.data)
		if err != nil {
			return nil, &configError{Key: "vip.etcd.cert", Value: cert.path, Reason: fmt.Sprintf("with vip.etcd.key %s: %v", key.path, err)}
		}
		cfg.Certificates = []tls.Certificate{pair}
		if key.mode.Perm()&0o077 != 0 {
			log.warnf("vip.etcd.key %s can be read by group or others (mode %04o); restrict it to 0600", key.path, key.mode.Perm())
		}
	}
	return cfg, nil
}
