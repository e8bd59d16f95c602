package demo

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"go.uber.org/zap/zapcore"
)

// NarrativeCore is a zap core that writes each log entry as one line a
// person reads in the demo's narrative, whatever the output is (a
// terminal, a pipe, a file): "      warning: <message> (key value, ...)",
// never JSON and never colour. The cmd layer builds the logger with it
// (`replicator demo` with --log-format auto); the components log as
// everywhere else.
//
// w receives whole lines, one Write each; writes are serialised.
func NarrativeCore(w io.Writer, level zapcore.LevelEnabler) zapcore.Core {
	return &narrativeCore{LevelEnabler: level, w: w, mu: &sync.Mutex{}}
}

type narrativeCore struct {
	zapcore.LevelEnabler
	w      io.Writer
	mu     *sync.Mutex
	fields []zapcore.Field
}

func (c *narrativeCore) With(fields []zapcore.Field) zapcore.Core {
	d := *c
	d.fields = append(append([]zapcore.Field(nil), c.fields...), fields...)
	return &d
}

func (c *narrativeCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *narrativeCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	_, err := io.WriteString(c.writer(), narrativeLine(e, append(append([]zapcore.Field(nil), c.fields...), fields...)))
	return err
}

func (c *narrativeCore) writer() io.Writer { return lockedWriter{c} }

type lockedWriter struct{ c *narrativeCore }

func (l lockedWriter) Write(p []byte) (int, error) {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return l.c.w.Write(p)
}

func (c *narrativeCore) Sync() error { return nil }

// narrativeLine is the entry on one line: its level as a word, the
// message, then the fields in the order given, as "key value".
func narrativeLine(e zapcore.Entry, fields []zapcore.Field) string {
	word := map[zapcore.Level]string{zapcore.DebugLevel: "debug", zapcore.InfoLevel: "note", zapcore.WarnLevel: "warning"}[e.Level]
	if word == "" {
		word = "error"
	}
	var parts []string
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		if _, seen := enc.Fields[f.Key]; seen {
			continue
		}
		f.AddTo(enc)
		if v, ok := enc.Fields[f.Key]; ok {
			parts = append(parts, f.Key+" "+oneLine(value(v)))
		}
	}
	line := "      " + word + ": " + oneLine(e.Message)
	if len(parts) > 0 {
		line += " (" + strings.Join(parts, ", ") + ")"
	}
	return line + "\n"
}

// value writes a field's value without JSON: nested objects as
// "key value" pairs in key order.
func value(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, k+" "+value(v[k]))
		}
		return strings.Join(parts, ", ")
	case []any:
		var parts []string
		for _, x := range v {
			parts = append(parts, value(x))
		}
		return strings.Join(parts, ", ")
	}
	return fmt.Sprint(v)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
