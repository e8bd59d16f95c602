package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/internal/testenv"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serverCert issues a certificate for 127.0.0.1 and localhost; it returns
// the certificate and key in PEM.
func (ca *testCA) serverCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// TestTLSVerifyFull starts a cluster with TLS on (a certificate from a CA
// made here) and runs snapshot and verify with sslmode=verify-full and the
// CA bundle; then with another CA's bundle, which must fail clearly.
func TestTLSVerifyFull(t *testing.T) {
	ca := newCA(t, "replicator test CA")
	certPEM, keyPEM := ca.serverCert(t)
	// The server runs as its own OS user: its files sit in a directory it
	// can read, the key owned by it with mode 0600 (the server insists).
	dir, err := os.MkdirTemp("", "replicator-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := testenv.GiveToServerUser(keyFile); err != nil {
		t.Fatal(err)
	}
	pg, err := testenv.StartPostgres(testenv.PostgresOptions{Settings: map[string]string{
		"ssl": "on", "ssl_cert_file": "'" + certFile + "'", "ssl_key_file": "'" + keyFile + "'"}})
	if err != nil {
		t.Fatalf("start a PostgreSQL server with TLS: %v", err)
	}
	t.Cleanup(pg.Close)

	caFile := filepath.Join(t.TempDir(), "ca-bundle.pem")
	os.WriteFile(caFile, ca.pem, 0o644)
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	os.WriteFile(otherCA, newCA(t, "some other CA").pem, 0o644)
	withTLS := func(url, bundle string) string {
		return strings.Replace(url, "sslmode=disable", "sslmode=verify-full&sslrootcert="+bundle, 1)
	}

	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 1000) g`)
	srcURL, dstURL := withTLS(pg.URL(src), caFile), withTLS(pg.URL(dst), caFile)

	r := runCLI(t, 2*time.Minute, "snapshot", "--source", srcURL, "--target", dstURL, "--metrics-addr", "", "--log-format", "json")
	if r.code != 0 {
		t.Fatalf("snapshot over verify-full TLS: exit %d:\n%s", r.code, r.all())
	}
	// The stream's replication connection goes over verify-full TLS too.
	stream := startCLI(t, "stream", "--source", srcURL, "--target", dstURL, "--metrics-addr", "", "--log-format", "json")
	pg.Exec(t, src, `INSERT INTO items VALUES (1001, 'streamed over TLS')`)
	waitRow(t, pg, dst, `SELECT count(*) FROM items WHERE id = 1001`, stream)
	stream.stop(t)
	r = runCLI(t, time.Minute, "verify", "--source", srcURL, "--target", dstURL, "--wait-timeout", "1s", "--log-format", "json")
	if r.code != 0 || !strings.Contains(r.stdout, "items") {
		t.Fatalf("verify over verify-full TLS: exit %d:\n%s", r.code, r.all())
	}
	// The connections really are TLS, by the server's account.
	conn, err := pgx.Connect(t.Context(), srcURL)
	if err != nil {
		t.Fatalf("connect with verify-full: %v", err)
	}
	defer conn.Close(context.Background())
	var ssl bool
	if err := conn.QueryRow(t.Context(), `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
		t.Errorf("a verify-full connection is not TLS according to pg_stat_ssl (%v)", err)
	}

	// A bundle that did not sign the server's certificate.
	for _, args := range [][]string{
		{"verify", "--source", withTLS(pg.URL(src), otherCA), "--target", dstURL},
		{"snapshot", "--source", srcURL, "--target", withTLS(pg.URL(dst), otherCA), "--metrics-addr", ""},
	} {
		r := runCLI(t, time.Minute, append(args, "--log-format", "json")...)
		line := errorLine(t, r, []string{testenv.Password}, "certificate", "sslrootcert", "sslmode")
		t.Logf("%s", line)
	}
}

// TestRedisTLSWithCABundle runs redis sync and verify over TLS to servers
// whose certificates come from a CA made here, verified with --tls-ca; a
// bundle of another CA fails with exit 2 and names the certificate.
func TestRedisTLSWithCABundle(t *testing.T) {
	ca := newCA(t, "replicator redis test CA")
	certPEM, keyPEM := ca.serverCert(t)
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "r.crt"), filepath.Join(dir, "r.key"), filepath.Join(dir, "ca.pem")
	os.WriteFile(certFile, certPEM, 0o644)
	os.WriteFile(keyFile, keyPEM, 0o600)
	os.WriteFile(caFile, ca.pem, 0o644)
	otherCA := filepath.Join(dir, "other.pem")
	os.WriteFile(otherCA, newCA(t, "another CA").pem, 0o644)

	start := func() (*testenv.Redis, int) {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		r, err := testenv.StartRedis(testenv.RedisOptions{Args: []string{"--tls-port", fmt.Sprint(port),
			"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no"}})
		if err != nil {
			t.Fatalf("start redis-server with TLS: %v", err)
		}
		t.Cleanup(r.Close)
		return r, port
	}
	src, srcTLS := start()
	_, dstTLS := start()
	c := src.Client(0)
	defer c.Close()
	for i := 0; i < 100; i++ {
		c.Set(context.Background(), fmt.Sprintf("k%d", i), i, 0)
	}
	srcURL, dstURL := fmt.Sprintf("rediss://127.0.0.1:%d/0", srcTLS), fmt.Sprintf("rediss://127.0.0.1:%d/0", dstTLS)

	r := runCLI(t, time.Minute, "redis", "sync", "--source", srcURL, "--target", dstURL, "--tls-ca", caFile, "--metrics-addr", "", "--log-format", "json")
	if r.code != 0 {
		t.Fatalf("redis sync over TLS with --tls-ca: exit %d:\n%s", r.code, r.all())
	}
	r = runCLI(t, time.Minute, "redis", "verify", "--source", srcURL, "--target", dstURL, "--tls-ca", caFile)
	if r.code != 0 || !strings.Contains(r.all(), "IDENTICAL") {
		t.Fatalf("redis verify over TLS with --tls-ca: exit %d:\n%s", r.code, r.all())
	}
	r = runCLI(t, time.Minute, "redis", "verify", "--source", srcURL, "--target", dstURL, "--tls-ca", otherCA)
	if r.code != 2 || !strings.Contains(r.all(), "certificate") {
		t.Fatalf("redis verify with another CA's bundle: exit %d, want 2 naming the certificate:\n%s", r.code, r.all())
	}
}
