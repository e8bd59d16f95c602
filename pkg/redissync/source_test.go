package redissync_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
	"replicator/pkg/redissync"
)

// selfSigned writes a self-signed certificate and key (like Heroku's).
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-redis"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"test-redis"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o644)
	return cert, key
}

func startExtra(t *testing.T, args ...string) *testenv.Redis {
	t.Helper()
	r, err := testenv.StartRedis(testenv.RedisOptions{Password: "src-pass", Args: append([]string{"--repl-diskless-sync-delay", "0"}, args...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// fillSmall writes 503 keys: k0..k499, a hash, a sorted set and a key
// with a TTL.
func fillSmall(t *testing.T, r *testenv.Redis) {
	t.Helper()
	ctx := context.Background()
	c := r.Client(0)
	defer c.Close()
	p := c.Pipeline()
	for i := 0; i < 500; i++ {
		p.Set(ctx, fmt.Sprintf("k%d", i), i, 0)
	}
	p.HSet(ctx, "h", "a", 1, "b", 2)
	p.ZAdd(ctx, "z", redis.Z{Score: 1, Member: "x"})
	p.Set(ctx, "ttl", 1, time.Hour)
	if _, err := p.Exec(ctx); err != nil {
		t.Fatalf("fill %s: %v", r.Addr(), err)
	}
}

// TestSyncPSYNCOverTLS replicates from a TLS-only listener with a
// self-signed certificate, as Heroku Redis offers, with AUTH.
func TestSyncPSYNCOverTLS(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	cert, key := selfSigned(t, dir)
	tlsPort, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := startExtra(t, "--tls-port", fmt.Sprint(tlsPort), "--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", cert, "--tls-auth-clients", "no")
	fillSmall(t, s)
	redistest.FlushAll(t, dst)
	source := &redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", tlsPort), Password: "src-pass", TLSConfig: &tls.Config{InsecureSkipVerify: true}}
	if _, err := redissync.Sync(context.Background(), redissync.SyncConfig{Source: source, Mode: "psync",
		Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	redistest.AssertIdentical(t, s, dst)

	// The other direction: a TLS target (rediss://, --tls-skip-verify).
	redistest.FlushAll(t, s)
	target := &redis.Options{Addr: source.Addr, Password: "src-pass", TLSConfig: &tls.Config{InsecureSkipVerify: true}}
	if _, err := redissync.Sync(context.Background(), redissync.SyncConfig{Source: sourceOptions(), Mode: "psync",
		Writer: redissync.WriterConfig{Target: target}}, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	redistest.AssertIdentical(t, srv, s)

	// Verification on: the self-signed certificate is refused, clearly.
	source.TLSConfig = &tls.Config{ServerName: "test-redis"}
	_, err = redissync.Sync(context.Background(), redissync.SyncConfig{Source: source, Mode: "psync",
		Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "--tls-skip-verify") {
		t.Errorf("self-signed certificate with verification: %v", err)
	}
}

// TestAutoFallsBackToSCAN: a source that refuses PSYNC (as managed
// services may) is copied by SCAN, and the log says why.
func TestAutoFallsBackToSCAN(t *testing.T) {
	s := startExtra(t, "--rename-command", "PSYNC", "", "--rename-command", "SYNC", "")
	fillSmall(t, s)
	redistest.FlushAll(t, dst)
	core, logs := observer.New(zap.InfoLevel)
	o, _ := redis.ParseURL(s.URL(0))
	if _, err := redissync.Sync(context.Background(), redissync.SyncConfig{Source: o, Mode: "auto",
		Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.New(core)); err != nil {
		t.Fatal(err)
	}
	redistest.AssertIdentical(t, s, dst)
	found := false
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "falling back to SCAN") && strings.Contains(fmt.Sprint(e.ContextMap()["reason"]), "PSYNC") {
			found = true
		}
	}
	if !found {
		t.Errorf("no log line explaining the fallback; logs: %v", logs.All())
	}
	// psync mode does not fall back: it fails and says so.
	_, err := redissync.Sync(context.Background(), redissync.SyncConfig{Source: o, Mode: "psync",
		Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "refused replication") {
		t.Errorf("psync mode against a refusing source: %v", err)
	}
}

// TestFollowSCANKeyspaceNotifications follows a source without PSYNC.
func TestFollowSCANKeyspaceNotifications(t *testing.T) {
	s := startExtra(t)
	fillSmall(t, s)
	redistest.FlushAll(t, dst)
	o, _ := redis.ParseURL(s.URL(0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := redissync.Sync(ctx, redissync.SyncConfig{Source: o, Mode: "scan", Follow: true, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.NewNop())
		done <- err
	}()
	c := s.Client(0)
	defer c.Close()
	bg := context.Background()
	// Wait for the snapshot, then for the subscription, which is made
	// after it; only then are changes seen.
	redistest.WaitFor(t, 30*time.Second, "the snapshot on the target", func() bool { return redistest.Digest(t, s) == redistest.Digest(t, dst) })
	redistest.WaitFor(t, 30*time.Second, "the follower's keyspace subscription", func() bool {
		n, err := c.PubSubNumPat(bg).Result()
		return err == nil && n > 0
	})
	p := c.Pipeline()
	p.Set(bg, "new", "v", 0)
	p.Del(bg, "k1")
	p.HSet(bg, "h", "c", 3)
	p.Expire(bg, "k2", time.Hour)
	p.Rename(bg, "k3", "k3-renamed")
	if _, err := p.Exec(bg); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 30*time.Second, "the changes on the target", func() bool { return redistest.Digest(t, s) == redistest.Digest(t, dst) })
	redistest.AssertIdentical(t, s, dst)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSyncPSYNCWithACLUser authenticates to the source as an ACL user.
func TestSyncPSYNCWithACLUser(t *testing.T) {
	s := startExtra(t)
	c := s.Client(0)
	if err := c.Do(context.Background(), "ACL", "SETUSER", "migrator", "on", ">user-secret", "+@all", "~*").Err(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	fillSmall(t, s)
	redistest.FlushAll(t, dst)
	source := &redis.Options{Addr: s.Addr(), Username: "migrator", Password: "user-secret"}
	if _, err := redissync.Sync(context.Background(), redissync.SyncConfig{Source: source, Mode: "psync",
		Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	redistest.AssertIdentical(t, s, dst)
	source.Password = "wrong"
	_, err := redissync.Sync(context.Background(), redissync.SyncConfig{Source: source, Mode: "auto",
		Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), `username "migrator"`) || strings.Contains(err.Error(), "user-secret") {
		t.Errorf("wrong password: %v", err)
	}
}
