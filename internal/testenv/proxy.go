package testenv

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy between the replicator and a database, for fault
// tests: it can cut every open connection, refuse new ones, add latency and
// throttle bandwidth. (A dozen lines of net.Conn plumbing serve the tests'
// needs; an in-process toxiproxy would bring its own logging and metrics
// stacks into the module for the same four faults.)
type Proxy struct {
	Port     int
	upstream string
	ln       net.Listener

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	down      bool
	latency   time.Duration
	bytesPerS int
	accepted  int
}

// StartProxy listens on a free loopback port and forwards to upstream
// (host:port).
func StartProxy(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{Port: ln.Addr().(*net.TCPAddr).Port, upstream: upstream, ln: ln,
		conns: map[net.Conn]struct{}{}}
	go p.serve()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.Port) }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.accepted++
		p.mu.Unlock()
		go p.handle(c)
	}
}

func (p *Proxy) handle(client net.Conn) {
	server, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		p.copy(dst, src)
		dst.Close()
		src.Close()
	}
	go pipe(server, client)
	go pipe(client, server)
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}

func (p *Proxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			lat, rate := p.latency, p.bytesPerS
			p.mu.Unlock()
			if lat > 0 {
				time.Sleep(lat)
			}
			if rate > 0 {
				time.Sleep(time.Duration(float64(n) / float64(rate) * float64(time.Second)))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // io.EOF or a cut: either way this direction is done
		}
	}
}

// Cut closes every open connection through the proxy (both sides see a
// reset mid-stream); new connections are still accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// SetDown refuses (down) or accepts new connections; with down it also
// cuts the open ones, like a network partition.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.Cut()
	}
}

// SetLatency delays every forwarded chunk by d.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// SetBandwidth limits each direction of each connection to about
// bytesPerSecond; 0 removes the limit.
func (p *Proxy) SetBandwidth(bytesPerSecond int) {
	p.mu.Lock()
	p.bytesPerS = bytesPerSecond
	p.mu.Unlock()
}

// Accepted is how many connections the proxy has accepted so far; a test
// can tell from it that a client reconnected.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops the proxy and cuts every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut()
}
