// Package e2e holds end-to-end tests of the replicator binary against real
// servers: the daemon (`replicator run`) killed and restarted while an app
// writes, checked with checksums the servers compute themselves.
package e2e
