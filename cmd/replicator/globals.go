package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/alecthomas/kong"
	"github.com/mattn/go-isatty"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"replicator/pkg/pgutil"
)

// Globals are the flags every command accepts.
type Globals struct {
	Config    kong.ConfigFlag  `help:"YAML file with defaults for any flag (keys are flag names, e.g. source:, target:, jobs:)." type:"existingfile" placeholder:"FILE"`
	LogFormat string           `help:"Log format: auto (console on a terminal, JSON otherwise), console or json." enum:"auto,console,json" default:"auto"`
	LogLevel  string           `help:"Log level: debug, info, warn or error." enum:"debug,info,warn,error" default:"info"`
	HerokuEnv string           `help:"Env file written by 'heroku config -s -a APP': its DATABASE_URL and REDIS_URL stand in for the source URLs, behind the environment. Command line only." type:"existingfile" placeholder:"FILE"`
	Version   kong.VersionFlag `help:"Print the version and exit."`

	// urls are the connection strings the command was given, so their
	// passwords can be scrubbed from anything printed.
	urls []string
}

// remember registers connection strings whose passwords must never be
// printed.
func (g *Globals) remember(urls ...string) { g.urls = append(g.urls, urls...) }

func (g *Globals) secrets() []string { return pgutil.Secrets(g.urls...) }

// logger builds the zap logger: console on a terminal, JSON otherwise.
func (g *Globals) logger() (*zap.Logger, error) {
	var level zapcore.Level
	if err := level.Set(g.LogLevel); err != nil {
		return nil, err
	}
	format := g.LogFormat
	if format == "auto" || format == "" {
		format = "json"
		if isatty.IsTerminal(os.Stderr.Fd()) {
			format = "console"
		}
	}
	var enc zapcore.Encoder
	if format == "console" {
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		cfg.EncodeLevel = zapcore.CapitalLevelEncoder
		if isatty.IsTerminal(os.Stderr.Fd()) {
			cfg.EncodeLevel = zapcore.CapitalColorLevelEncoder // colour only for a person, never into a pipe or file
		}
		enc = zapcore.NewConsoleEncoder(cfg)
	} else {
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(cfg)
	}
	out := &scrubWriter{w: os.Stderr, secrets: g.secrets()}
	core := zapcore.NewCore(enc, zapcore.AddSync(out), level)
	return zap.New(core), nil
}

// scrubWriter removes passwords from every log line, a last line of defence
// behind the packages' own care.
type scrubWriter struct {
	w       *os.File
	secrets []string
}

func (s *scrubWriter) Write(p []byte) (int, error) {
	if _, err := s.w.WriteString(pgutil.Scrub(string(p), s.secrets)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// setup builds the logger and the metrics registry, serving it on
// metricsAddr (none when empty) until ctx ends: what every long-running
// command starts with. The caller syncs the logger when done.
func (g *Globals) setup(ctx context.Context, metricsAddr string) (*zap.Logger, *prometheus.Registry, error) {
	log, err := g.logger()
	if err != nil {
		return nil, nil, err
	}
	reg, err := startMetrics(ctx, metricsAddr, log)
	if err != nil {
		return nil, nil, err
	}
	return log, reg, nil
}

// setupOneShot is setup for commands that end on their own (snapshot,
// verify, audit, redis sync without --follow): a busy metrics port is a
// warning, not a reason to refuse the work, because nothing scrapes a run
// of minutes the way it scrapes a daemon. Daemons use setup and refuse.
func (g *Globals) setupOneShot(ctx context.Context, metricsAddr string) (*zap.Logger, *prometheus.Registry, error) {
	log, err := g.logger()
	if err != nil {
		return nil, nil, err
	}
	reg, err := startMetricsOneShot(ctx, metricsAddr, log)
	return log, reg, err
}

// startMetricsOneShot serves metrics like startMetrics but, when the address
// cannot be bound, warns and returns a registry that is simply not served.
func startMetricsOneShot(ctx context.Context, addr string, log *zap.Logger) (*prometheus.Registry, error) {
	reg, err := startMetrics(ctx, addr, log)
	if err == nil {
		return reg, nil
	}
	var busy *metricsListenError
	if !errors.As(err, &busy) {
		return nil, err
	}
	log.Warn("metrics endpoint not served; continuing without it (pass --metrics-addr HOST:PORT to choose a free one, or --metrics-addr '' to silence this)",
		zap.String("addr", addr), zap.Error(busy.Err))
	return startMetrics(ctx, "", log)
}

// metricsListenError is a metrics address that could not be bound.
type metricsListenError struct {
	Addr string
	Err  error
}

func (e *metricsListenError) Error() string {
	return fmt.Sprintf("metrics endpoint %s: %v: choose another --metrics-addr, or pass --metrics-addr '' to disable it", e.Addr, e.Err)
}

func (e *metricsListenError) Unwrap() error { return e.Err }

// metricsFlags is embedded by long-running commands.
type metricsFlags struct {
	MetricsAddr string `help:"Serve /metrics (Prometheus) and /healthz here; empty to disable. Loopback by default: expose it deliberately." default:"127.0.0.1:9187" placeholder:"HOST:PORT"`
}

// startMetrics builds the registry and serves it until ctx ends. The
// returned registry is passed into the packages.
func startMetrics(ctx context.Context, addr string, log *zap.Logger) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if addr == "" {
		return reg, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &metricsListenError{Addr: addr, Err: err}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics endpoint stopped", zap.Error(err))
		}
	}()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	log.Info("metrics endpoint listening", zap.String("addr", ln.Addr().String()))
	return reg, nil
}
