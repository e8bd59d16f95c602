// Package cutover owns migration night: the state machine behind
// `replicator cutover`. Its steps, in order:
//
//  1. preconditions: the target holds a finished snapshot and a stream is
//     running (logical capture: the slot is active; trigger capture: the
//     source was ticked recently);
//  2. wait until the apply lag is below Config.MaxLag;
//  3. with Config.Fence, stop writes on the source: revoke INSERT, UPDATE,
//     DELETE and TRUNCATE on every user table from the application's roles
//     (or set default_transaction_read_only on the database), then end the
//     remaining sessions of those roles and wait for write transactions
//     still open;
//  4. record the source's high-water mark (pg_current_wal_lsn() after the
//     fence, or a trigger-capture tick) and wait until the target has
//     applied it;
//  5. move every target sequence to at least the source's value plus a
//     margin, never backwards;
//  6. a final verification of the whole database (pkg/verify);
//  7. print the switch step: Route 53 weighted records at 10 % then 100 %,
//     the new DATABASE_URL and REDIS_URL, and the rollback command.
//
// Every step prints "step N/M: what: done|skipped|waiting (…)" to the
// person running it and is safe to rerun. What a step did is recorded in
// table replicator.cutover on the target, one row per step; the fence's row
// holds exactly what was changed on the source (each revoked privilege, or
// the database setting it replaced) so that Unfence restores that and
// nothing else. A source that is fenced is never fenced again. Steps 4 to 6
// are recorded only once the source is fenced: before that, writes go on
// and their result would not hold.
//
// Config.DryRun prints the plan (current lag, roles to fence and what they
// hold, sessions to end, sequence moves) and changes nothing anywhere, not
// even the bookkeeping table.
//
//	res, err := cutover.Run(ctx, cutover.Config{SourceURL: src, TargetURL: dst,
//		Fence: true, MaxLag: 5 * time.Second, SequenceMargin: 1000, Verify: "full"}, os.Stdout, log, reg)
//	if errors.Is(err, cutover.ErrDifferences) { /* exit 1 */ }
//	err = cutover.Unfence(ctx, cfg, os.Stdout, log) // the rollback
package cutover
