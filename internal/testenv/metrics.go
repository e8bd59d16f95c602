package testenv

import (
	"fmt"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a process's /metrics endpoint, by metric name.
// Tests read values from it, not only names: a metric that is registered
// but never updated is exported all the same, at zero.
type Metrics map[string]*dto.MetricFamily

// ScrapeMetrics fetches and parses http://addr/metrics.
func ScrapeMetrics(addr string) (Metrics, error) {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics on %s: %s", addr, resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics of %s: %w", addr, err)
	}
	return mfs, nil
}

// Has reports whether the scrape declares name.
func (m Metrics) Has(name string) bool { return m[name] != nil }

// Value adds up the samples of name whose labels include every given
// label, name and value in turn ("op", "update"): a counter's or gauge's
// value, a histogram's or summary's sum of observations. ok is false when
// no sample matches.
func (m Metrics) Value(name string, labels ...string) (v float64, ok bool) {
	return m.add(name, labels, func(s *dto.Metric) float64 {
		switch {
		case s.Counter != nil:
			return s.Counter.GetValue()
		case s.Gauge != nil:
			return s.Gauge.GetValue()
		case s.Histogram != nil:
			return s.Histogram.GetSampleSum()
		case s.Summary != nil:
			return s.Summary.GetSampleSum()
		}
		return s.GetUntyped().GetValue()
	})
}

// Count adds up the observation counts of a histogram or summary.
func (m Metrics) Count(name string, labels ...string) (n float64, ok bool) {
	return m.add(name, labels, func(s *dto.Metric) float64 {
		if s.Histogram != nil {
			return float64(s.Histogram.GetSampleCount())
		}
		return float64(s.GetSummary().GetSampleCount())
	})
}

func (m Metrics) add(name string, labels []string, value func(*dto.Metric) float64) (sum float64, ok bool) {
	mf := m[name]
	if mf == nil {
		return 0, false
	}
	for _, s := range mf.Metric {
		if matches(s, labels) {
			sum += value(s)
			ok = true
		}
	}
	return sum, ok
}

func matches(s *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range s.Label {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}
