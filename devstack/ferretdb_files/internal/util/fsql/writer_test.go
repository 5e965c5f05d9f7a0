// Added by Sandesh's build (devstack/ferretdb_patches.py, patch 11).

package fsql

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

func openFile(t *testing.T, maxOpen int) *DB {
	t.Helper()

	// No busy timeout: a write that meets another one fails at once with
	// "database is locked" instead of sleeping.
	uri := "file:" + filepath.Join(t.TempDir(), "test.sqlite") +
		"?_pragma=busy_timeout(0)&_pragma=journal_mode(wal)"

	sqlDB, err := sql.Open("sqlite", uri)
	if err != nil {
		t.Fatal(err)
	}

	sqlDB.SetMaxOpenConns(maxOpen)
	sqlDB.SetMaxIdleConns(maxOpen)

	db := WrapDB(sqlDB, "test", slog.Default())
	t.Cleanup(func() { _ = db.Close() })

	if _, err = db.ExecContext(context.Background(), "CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)"); err != nil {
		t.Fatal(err)
	}

	return db
}

func count(t *testing.T, db *DB) int {
	t.Helper()

	var n int
	if err := db.QueryRowContext(context.Background(), "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}

	return n
}

// Writers on many goroutines, as FerretDB's connections make them, never
// meet SQLite's lock: they take turns.
func TestConcurrentWritesTakeTurns(t *testing.T) {
	db := openFile(t, 100)
	ctx := context.Background()

	const writers, each = 8, 60

	var wg sync.WaitGroup
	errs := make(chan error, writers*each)

	for w := range writers {
		wg.Add(1)

		go func() {
			defer wg.Done()

			for i := range each {
				if i%2 == 0 {
					_, err := db.ExecContext(ctx, "INSERT INTO t VALUES (?, ?)", fmt.Sprintf("%d-%d", w, i), "x")
					errs <- err

					continue
				}

				errs <- db.InTransaction(ctx, func(tx *Tx) error {
					// A read, then a write, in one transaction: the upgrade
					// fails at once if another connection is writing.
					var n int
					if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
						return err
					}

					_, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (?, ?)", fmt.Sprintf("%d-%d", w, i), fmt.Sprint(n))

					return err
				})
			}
		}()
	}

	wg.Wait()
	close(errs)

	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	if n := count(t, db); n != writers*each {
		t.Fatalf("%d rows, want %d", n, writers*each)
	}
}

// A transaction that fails gives the turn back.
func TestAFailedTransactionGivesTheTurnBack(t *testing.T) {
	db := openFile(t, 100)
	ctx := context.Background()

	err := db.InTransaction(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO no_such_table VALUES (1)")
		return err
	})
	if err == nil {
		t.Fatal("the insert into a missing table succeeded")
	}

	done := make(chan error, 1)

	go func() {
		_, err := db.ExecContext(ctx, "INSERT INTO t VALUES ('a', 'b')")
		done <- err
	}()

	select {
	case err = <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the next write waited for a turn never given back")
	}
}

// A write waiting for its turn gives up with its context.
func TestAWaitingWriteEndsWithItsContext(t *testing.T) {
	db := openFile(t, 100)

	db.writer.turn <- struct{}{} // another write holds the turn
	defer db.writer.done()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()

	if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES ('a', 'b')"); err == nil {
		t.Fatal("the write did not wait for its turn")
	}
}

// With a pool of one connection (an in-memory database), writes do not keep
// that connection: reads after them still get it.
func TestAPoolOfOneStaysFreeForReads(t *testing.T) {
	db := openFile(t, 1)

	if _, err := db.ExecContext(context.Background(), "INSERT INTO t VALUES ('a', 'b')"); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("read after a write: %d rows, %v", n, err)
	}
}
