// Package units formats quantities for people: sizes in binary units, as
// every report and progress line of the replicator shows them.
//
//	units.Bytes(1536) // "1.5 KiB"
package units

import "fmt"

// Bytes formats n bytes with a binary unit (B, KiB, MiB, GiB, …).
func Bytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit || m <= -unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
