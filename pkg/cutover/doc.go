// Package cutover owns migration night: the state machine behind
// `replicator cutover`. Its steps, in order:
//
//  1. preconditions: the target holds a finished snapshot and a stream is
//     running (logical capture: the slot is active; trigger capture: the
//     source was ticked recently) and applying: unless the source is
//     already fenced, the target must have applied a batch within the last
//     10 s (logical: unless it is caught up), else nothing is changed;
//  2. wait until the apply lag is below Config.MaxLag (trigger capture:
//     changes the applied tick's snapshot does not see count as lag);
//     then, with Config.Verify full (the default), start the touched-row
//     logs on both sides and verify every table and sequence while the
//     stream applies, before anything is fenced (a difference stops here,
//     with the app still writing), and wait for the lag again
//     (verifylive.go);
//  3. with Config.Fence, stop writes on the source. FenceAuto (default)
//     picks FenceTrigger when the replicator's role may create triggers on
//     every user table: a statement-level BEFORE trigger refusing writes on
//     each, made in one transaction that first ends the open write
//     transactions on them (see fence_trigger.go for why and how the
//     replicator's own sessions pass). Else FenceRevoke revokes INSERT,
//     UPDATE, DELETE and TRUNCATE from the app's roles (FenceReadOnly sets
//     default_transaction_read_only on the database), ends those roles'
//     sessions and waits for write transactions still open;
//  4. record the source's high-water mark (pg_current_wal_lsn() after the
//     fence, or a trigger-capture tick) and wait until the target has
//     applied it; with Config.RedisSource, also wait for the Redis follower
//     to carry a marker key over;
//  5. move every target sequence to at least the source's value plus a
//     margin, never backwards;
//  6. a final verification inside the freeze: of the rows either side
//     wrote since step 2's verification (pkg/verify's incremental mode:
//     read by key, so its cost follows the writes of those minutes, not
//     the size of the database) and every sequence; of every table with
//     --verify full-in-freeze, or when step 2 could not start the logs;
//     and of Redis (pkg/redisverify) when configured. Then the target's
//     log is removed and the write freeze, from the fence to here (Redis
//     included), is printed and recorded (step "freeze"); the source's log
//     is removed after it;
//  7. print the switch step: DATABASE_URL and REDIS_URL in SSM and a
//     redeploy (or one plain CNAME), weighted Route 53 records for the
//     app's own endpoint only (Config.AppRecord), and the rollback command.
//
// Between 6 and the freeze's end, still inside it and before the switch is
// printed, the fallback window begins (reverse.go): trigger capture is
// installed on the target and its capture point taken, so every write the
// app makes on AWS is recorded from its first; the reverse stream's state
// is recorded in replicator.state on the source, and the direction
// ("reverse" in replicator.cutover on the target) is reverse from then on.
// Reverse (`replicator reverse`) applies the target's changes to the
// fenced source with pkg/apply, exactly once. Rollback (`cutover
// --rollback`, rollback.go) fences the target, drains the reverse stream,
// moves the source's sequences past the target's, verifies, unfences the
// source, and prints its own freeze and the switch back; its steps are
// recorded in replicator.cutover on the source.
//
// Every step prints "step N/M: what: done|skipped|waiting (…)" to the
// person running it and is safe to rerun. What a step did is recorded in
// table replicator.cutover on the target, one row per step; the fence's row
// holds exactly what was changed on the source (the tables given a fence
// trigger and the sessions ended, each revoked privilege, or the database
// setting it replaced) so that Unfence restores that and nothing else. The
// trigger fence also describes itself on the source (schema
// replicator_fence), so Unfence lifts it even when the record is gone. A source that is fenced is never fenced again. Steps 4 to 6
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
//	err = cutover.Reverse(ctx, cutover.ReverseConfig{SourceURL: src, TargetURL: dst}, log) // the fallback window's daemon
//	err = cutover.Rollback(ctx, cfg, os.Stdout, log) // back to the source, nothing lost
//	err = cutover.Unfence(ctx, cfg, os.Stdout, log)  // before the app wrote to the target
package cutover
