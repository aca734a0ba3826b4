// pgx v4 workload (Debian's golang-github-jackc-pgx-v4-dev): statements
// prepared and cached per connection (Describe before first use), batches of
// many queries with one Sync (SendBatch), transactions that commit and roll
// back, savepoints (nested Begin).
// GOPATH=/usr/share/gocode GO111MODULE=off go run pg_pgx.go <uri> <workers> <steps>
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
)

type report struct {
	Committed  []int64 `json:"committed"`
	RolledBack []int64 `json:"rolled_back"`
	Items      int     `json:"items"`
}

const ins = "INSERT INTO ledger (id, worker, n, amount, note) VALUES ($1, $2, $3, $4, $5)"

func work(ctx context.Context, uri string, w, steps int, out *report, mu *sync.Mutex) error {
	c, err := pgx.Connect(ctx, uri)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var committed, rolledBack []int64
	items := 0
	for step := 0; step < steps; step++ {
		base := int64(w*1000000 + step*10)
		ab := []int{(w+step)%8 + 1, (w+step+3)%8 + 1}
		sort.Ints(ab)
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, ins, base, w, step, fmt.Sprintf("%.2f", float64(step)*1.25), fmt.Sprintf("w%d", w)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - 1 WHERE id = $1", ab[0]); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + 1 WHERE id = $1", ab[1]); err != nil {
			return err
		}
		if step%3 == 0 {
			if err := tx.Rollback(ctx); err != nil {
				return err
			}
			rolledBack = append(rolledBack, base)
		} else {
			if err := tx.Commit(ctx); err != nil {
				return err
			}
			committed = append(committed, base)
		}
		// A savepoint (nested transaction) with a failing insert.
		tx, err = c.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, ins, base+1, w, step, "1", nil); err != nil {
			return err
		}
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		_, err = sp.Exec(ctx, ins, base+1, w, step, "2", nil)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
			return fmt.Errorf("expected a unique violation, got %v", err)
		}
		if err := sp.Rollback(ctx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, ins, base+2, w, step, "3", nil); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		committed = append(committed, base+1, base+2)
		// A batch: several queries, one Sync (an implicit transaction).
		b := &pgx.Batch{}
		for k := int64(3); k <= 5; k++ {
			b.Queue(ins, base+k, w, step, strconv.FormatInt(k, 10), nil)
		}
		b.Queue("INSERT INTO items (id, worker) VALUES ($1, $2)", base, w)
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		committed = append(committed, base+3, base+4, base+5)
		items++
		if _, err := c.Exec(ctx, ins, base+6, w, step, "6", nil); err != nil {
			return err
		}
		committed = append(committed, base+6)
	}
	mu.Lock()
	defer mu.Unlock()
	out.Committed = append(out.Committed, committed...)
	out.RolledBack = append(out.RolledBack, rolledBack...)
	out.Items += items
	return nil
}

func main() {
	uri := os.Args[1]
	workers, _ := strconv.Atoi(os.Args[2])
	steps, _ := strconv.Atoi(os.Args[3])
	ctx := context.Background()
	out := &report{Committed: []int64{}, RolledBack: []int64{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if err := work(ctx, uri, w, steps, out, &mu); err != nil {
				errs <- err
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	text, _ := json.Marshal(out)
	fmt.Println(string(text))
}
