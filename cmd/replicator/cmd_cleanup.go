package main

import (
	"context"
	"fmt"
	"os"

	"replicator/pkg/cleanup"
	"replicator/pkg/pgutil"
)

type cleanupCmd struct {
	pgFlags
	Yes   bool `help:"Really remove the objects (without it, cleanup lists what it would remove and changes nothing)."`
	Force bool `help:"Remove them although the source is fenced or a stream runs (the fence and its record are left in place; lift them with cutover --unfence)."`
}

func (c *cleanupCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target)
	source, err := pgutil.Connect(ctx, c.Source, "source")
	if err != nil {
		return err
	}
	defer source.Close(context.Background())
	target, err := pgutil.Connect(ctx, c.Target, "target")
	if err != nil {
		return err
	}
	defer target.Close(context.Background())

	busy, err := cleanup.CheckBusy(ctx, source, target)
	if err != nil {
		return err
	}
	for _, r := range busy.Reasons {
		fmt.Fprintln(os.Stdout, "in use:", r)
	}
	for _, l := range busy.Leaves {
		fmt.Fprintln(os.Stdout, "--force would leave behind:", l)
	}
	if !c.Yes {
		objs, err := cleanup.Plan(ctx, source, target)
		if err != nil {
			return err
		}
		n := 0
		for _, o := range objs {
			if o.Exists {
				fmt.Fprintln(os.Stdout, "would remove", o)
				n++
			}
		}
		if n == 0 {
			fmt.Fprintln(os.Stdout, "nothing to remove: no replicator objects on source or target")
			return nil
		}
		return fmt.Errorf("nothing removed: rerun with --yes to remove the %d objects above (stop `replicator stream`/`run` first)", n)
	}
	done, err := cleanup.RunWith(ctx, source, target, cleanup.Options{Force: c.Force})
	for _, o := range done {
		fmt.Fprintln(os.Stdout, "removed", o)
	}
	if err != nil {
		return err
	}
	if len(done) == 0 {
		fmt.Fprintln(os.Stdout, "nothing to remove: no replicator objects on source or target")
	}
	return nil
}
