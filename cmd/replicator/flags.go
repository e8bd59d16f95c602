package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// pgFlags are the Postgres connection flags.
type pgFlags struct {
	Source string `help:"Source Postgres URL, e.g. postgres://user:PASSWORD@host:5432/db?sslmode=require." env:"REPLICATOR_SOURCE_URL,DATABASE_URL" placeholder:"URL"`
	Target string `help:"Target Postgres URL (RDS), e.g. postgres://user:PASSWORD@rds-host:5432/db?sslmode=verify-full&sslrootcert=global-bundle.pem." env:"REPLICATOR_TARGET_URL" placeholder:"URL"`
}

// targetFlag is for commands that read only the target.
type targetFlag struct {
	Target string `help:"Target Postgres URL (RDS)." env:"REPLICATOR_TARGET_URL" placeholder:"URL"`
}

// formatFlags choose a report format and destination.
type formatFlags struct {
	Format string `help:"Output format: text, json or markdown." enum:"text,json,markdown" default:"text"`
	Out    string `help:"Write the report to FILE instead of standard output." placeholder:"FILE" type:"path"`
}

// writeReport writes a report to --out FILE, through a temporary file in
// the same directory renamed into place once the report is complete (so a
// failed run leaves no half-written file), or to stdout when out is empty.
func writeReport(out string, write func(io.Writer) error) error {
	if out == "" {
		return write(os.Stdout)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".replicator-report-*")
	if err != nil {
		return fmt.Errorf("write the report to %s: %w: check the directory exists and is writable", out, err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("write the report to %s: %w", out, err)
	}
	return nil
}
