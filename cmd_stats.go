package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"ipnd/admin"
)

var statsCommand = command{
	name:    "stats",
	args:    "[flags]",
	summary: "bytes on disk per bucket and per notification",
	run:     cmdStats,
}

// cmdStats prints where the bytes on disk go: per bucket, per
// notification, and the journal; then any ids lost to journal damage.
func cmdStats(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := clientCommand("stats", getenv, stdout)
	if err := fs.parse(args, 0, 0, ""); err != nil {
		return err
	}
	c, err := fs.client(getenv)
	if err != nil {
		return err
	}
	var st admin.Stats
	if err := c.getJSON(ctx, "/api/stats", &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "BUCKET\tKEYS\tBYTES\tIN USE\tBYTES/NOTIFICATION\t\n")
	for _, b := range st.Buckets {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t\n", b.Name, b.Keys, b.Bytes, b.InUse, b.PerNotification)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "notifications %d; database file %d bytes (%.0f per notification, %d free); journal %d bytes\n",
		st.Notifications, st.FileBytes, st.PerNotification, st.FreeBytes, st.JournalBytes)
	for _, l := range st.Lost {
		fmt.Fprintf(stdout, "lost ids %d-%d (%s: %s; recorded %s)\n", l.First, l.Last, l.Segment, l.Reason,
			l.RecordedAt.Format(time.RFC3339))
	}
	return nil
}
