// Command replicator moves a live application's data from Heroku to AWS:
// Postgres to RDS and Redis to ElastiCache. It copies, then streams, then
// proves the copy. This package is the only place that reads flags,
// environment and config files, builds the logger and the metrics registry,
// and decides the exit code.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"

	"replicator/pkg/pgutil"
)

// Exit codes of the command-line contract.
const (
	exitOK          = 0
	exitDifferences = 1 // verification found differences
	exitError       = 2 // usage, connection, preflight or runtime error
)

// errDifferences is returned by verify commands when the copy differs; the
// report has already been written.
var errDifferences = errors.New("verification found differences")

type cli struct {
	Globals

	Audit    auditCmd    `cmd:"" help:"Step one: inventory the source (sizes, tables without keys, extensions, capture mode that will work)."`
	Snapshot snapshotCmd `cmd:"" help:"Copy schema and data from source to target under one consistent snapshot, ready for streaming."`
	Stream   streamCmd   `cmd:"" help:"Stream changes from the source to the target until SIGINT/SIGTERM; resumes where it stopped."`
	Run      runCmd      `cmd:"" help:"The sidecar daemon: snapshot if not done yet, then stream."`
	Verify   verifyCmd   `cmd:"" help:"Compare source and target: row counts, chunk checksums, differing rows by key. Exit 1 on differences."`
	Cutover  cutoverCmd  `cmd:"" help:"Migration night: wait for low lag, fence writes, drain, move sequences, verify, print the switch steps."`
	Reverse  reverseCmd  `cmd:"" help:"The fallback window's daemon, after cutover: carry the app's writes on the target back to the fenced source, for cutover --rollback; resumes where it stopped."`
	Status   statusCmd   `cmd:"" help:"Show snapshot progress, capture mode, lag and last error from the target's bookkeeping."`
	Cleanup  cleanupCmd  `cmd:"" help:"Remove every object the replicator created: slot, publication, triggers, changelog, schema replicator."`
	Redis    redisCmd    `cmd:"" help:"Redis to ElastiCache: sync (PSYNC, RDB file or SCAN) and verify."`
	Demo     demoCmd     `cmd:"" help:"Run the whole migration on throwaway local servers and print the result."`
}

const description = `Move a live Postgres and Redis from Heroku to AWS with minimal downtime.

The playbook: audit → snapshot (copy) → stream (keep in sync) → verify → cutover.
Every URL flag also reads an environment variable (REPLICATOR_SOURCE_URL,
REPLICATOR_TARGET_URL, REPLICATOR_REDIS_SOURCE_URL, REPLICATOR_REDIS_TARGET_URL;
the source flags then Heroku's own DATABASE_URL and REDIS_URL, also from an
env file written by 'heroku config -s' and passed as --heroku-env FILE), and
then the --config YAML file, whose keys are the flag names:

    source: postgres://app:PASSWORD@heroku-host:5432/app?sslmode=require
    target: postgres://app:PASSWORD@rds-host:5432/app?sslmode=verify-full
    jobs: 8

Exit codes: 0 success, 1 verification found differences, 2 usage, connection
or preflight error (the message names the problem and the fix).

Try it on local throwaway servers first:  replicator demo`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		args = []string{"--help"} // bare `replicator` shows what it can do
	}
	env := &envSource{}
	if path := herokuEnvFlag(args); path != "" {
		vars, err := loadHerokuEnv(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "replicator: "+err.Error())
			return exitError
		}
		env.file = vars
	}
	var c cli
	parser, err := newParser(&c, env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "replicator: internal error building the command line:", err)
		return exitError
	}
	kctx, code, done := parse(parser, args)
	if done {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	err = kctx.Run(&c.Globals)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errDifferences):
		return exitDifferences
	default:
		fmt.Fprintln(os.Stderr, "replicator: "+pgutil.Scrub(err.Error(), c.Globals.secrets()))
		return exitError
	}
}

// newParser builds the command line. env holds the --heroku-env file's
// variables (nil or empty: none).
func newParser(c *cli, env *envSource) (*kong.Kong, error) {
	if env == nil {
		env = &envSource{}
	}
	return kong.New(c,
		kong.Name("replicator"),
		kong.Description(description),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Configuration(yamlLoader(env)),
		kong.Resolvers(env),
		kong.Vars{"version": versionString()},
		kong.Exit(func(code int) { panic(exitPanic(code)) }),
	)
}

// exitPanic carries kong's exit request (after --help) out of Parse, so
// that exit codes are decided here and deferred cleanups still run.
type exitPanic int

// parse parses args; it reports done with an exit code when parsing ended
// the run (--help, or a usage error, which is exit 2 with the usage shown).
func parse(parser *kong.Kong, args []string) (kctx *kong.Context, code int, done bool) {
	defer func() {
		if r := recover(); r != nil {
			p, ok := r.(exitPanic)
			if !ok {
				panic(r)
			}
			code, done = int(p), true
		}
	}()
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "replicator: "+pgutil.RedactText(err.Error()))
		fmt.Fprintln(os.Stderr, "run `replicator --help` or `replicator <command> --help` for the flags")
		return nil, exitError, true
	}
	return kctx, 0, false
}
