package Lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testPKI is a throwaway certificate authority with a server certificate
// for the lab's etcd addresses and a client certificate, written as PEM
// files, made with crypto/x509 for each test.
type testPKI struct {
	dir                            string
	CaCert, serverCert, serverKey  string
	ClientCert, ClientKey, OtherCA string
	caPool                         *x509.CertPool
	clientPair                     tls.Certificate
}

func NewPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	caKey, ca, caDER := p.issue(t, "vipd test CA", nil, nil, nil)
	p.CaCert = p.Write(t, "ca.pem", "CERTIFICATE", caDER)
	_, _, otherDER := p.issue(t, "some other CA", nil, nil, nil)
	p.OtherCA = p.Write(t, "other-ca.pem", "CERTIFICATE", otherDER)

	ips := []net.IP{net.ParseIP(EtcdIP)}
	for i := 1; i <= 3; i++ {
		ips = append(ips, net.ParseIP(fmt.Sprintf("192.0.2.%d", 10+i)))
	}
	srvKey, _, srvDER := p.issue(t, "etcd", ips, caKey, ca)
	p.serverCert = p.Write(t, "server.pem", "CERTIFICATE", srvDER)
	p.serverKey = p.writeKey(t, "server-key.pem", srvKey)
	cliKey, _, cliDER := p.issue(t, "vipd", nil, caKey, ca)
	p.ClientCert = p.Write(t, "client.pem", "CERTIFICATE", cliDER)
	p.ClientKey = p.writeKey(t, "client-key.pem", cliKey)

	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	var err error
	if p.clientPair, err = tls.LoadX509KeyPair(p.ClientCert, p.ClientKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue makes a key and a certificate: self-signed CA when parent is nil,
// else a leaf for both server and client use.
func (p *testPKI) issue(t testing.TB, cn string, ips []net.IP, parentKey *ecdsa.PrivateKey, parent *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  ips,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func (p *testPKI) Write(t testing.TB, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *testPKI) writeKey(t testing.TB, name string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.Write(t, name, "EC PRIVATE KEY", der)
}

// clientConfig is the TLS configuration of a client of the lab's etcd (nil
// without TLS).
func (p *testPKI) clientConfig() *tls.Config {
	if p == nil {
		return nil
	}
	return &tls.Config{RootCAs: p.caPool, Certificates: []tls.Certificate{p.clientPair}}
}
