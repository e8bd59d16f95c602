package demo

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Every entry is one line of the narrative: level word, message, fields
// as "key value", nested objects flattened, no JSON, no line breaks; below
// the level nothing.
func TestNarrativeCoreLines(t *testing.T) {
	var b bytes.Buffer
	log := zap.New(NarrativeCore(&b, zap.WarnLevel)).With(zap.String("stage", "apply"))
	log.Info("not shown")
	log.Warn("stream interrupted;\nreconnecting", zap.Error(errors.New("connection reset\nby peer")), zap.Int("attempt", 3),
		zap.Object("lag", zapcore.ObjectMarshalerFunc(func(e zapcore.ObjectEncoder) error {
			e.AddString("batch", "7")
			e.AddFloat64("seconds", 1.5)
			return nil
		})))
	log.Error("gave up", zap.Strings("tables", []string{"public.a", "public.b"}))
	want := "      warning: stream interrupted; reconnecting (stage apply, error connection reset by peer, attempt 3, lag batch 7, seconds 1.5)\n" +
		"      error: gave up (stage apply, tables public.a, public.b)\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	if strings.ContainsAny(b.String(), "{}") {
		t.Errorf("JSON in the narrative: %s", b.String())
	}
}
