package lab

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

// PKI is a throwaway certificate authority with a server certificate
// for the lab's etcd addresses and a client certificate, written as PEM
// files, made with crypto/x509 for each test.
type PKI struct {
	Dir                            string
	CACert, ServerCert, ServerKey  string
	ClientCert, ClientKey, OtherCA string
	caPool                         *x509.CertPool
	clientPair                     tls.Certificate
}

func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir()}
	caKey, ca, caDER := p.Issue(t, "vipd test CA", nil, nil, nil)
	p.CACert = p.Write(t, "ca.pem", "CERTIFICATE", caDER)
	_, _, otherDER := p.Issue(t, "some other CA", nil, nil, nil)
	p.OtherCA = p.Write(t, "other-ca.pem", "CERTIFICATE", otherDER)

	ips := []net.IP{net.ParseIP(EtcdIP)}
	for i := 1; i <= 3; i++ {
		ips = append(ips, net.ParseIP(fmt.Sprintf("192.0.2.%d", 10+i)))
	}
	srvKey, _, srvDER := p.Issue(t, "etcd", ips, caKey, ca)
	p.ServerCert = p.Write(t, "server.pem", "CERTIFICATE", srvDER)
	p.ServerKey = p.WriteKey(t, "server-key.pem", srvKey)
	cliKey, _, cliDER := p.Issue(t, "vipd", nil, caKey, ca)
	p.ClientCert = p.Write(t, "client.pem", "CERTIFICATE", cliDER)
	p.ClientKey = p.WriteKey(t, "client-key.pem", cliKey)

	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	var err error
	if p.clientPair, err = tls.LoadX509KeyPair(p.ClientCert, p.ClientKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// Issue makes a key and a certificate: self-signed CA when parent is nil,
// else a leaf for both server and client use.
func (p *PKI) Issue(t testing.TB, cn string, ips []net.IP, parentKey *ecdsa.PrivateKey, parent *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
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

func (p *PKI) Write(t testing.TB, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.Dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *PKI) WriteKey(t testing.TB, name string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.Write(t, name, "EC PRIVATE KEY", der)
}

// clientConfig is the TLS configuration of a client of the lab's etcd (nil
// without TLS).
func (p *PKI) clientConfig() *tls.Config {
	if p == nil {
		return nil
	}
	return &tls.Config{RootCAs: p.caPool, Certificates: []tls.Certificate{p.clientPair}}
}
