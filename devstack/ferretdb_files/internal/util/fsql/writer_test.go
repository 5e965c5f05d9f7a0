// Added by Sandesh's build (devstack/ferretdb_patches.py, patch 11).

package fsql

import (
	"context"
	"database/sql"
	"errors"
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

	return openFileJournal(t, maxOpen, "wal")
}

func openFileJournal(t *testing.T, maxOpen int, journal string) *DB {
	t.Helper()

	// No busy timeout: a write that meets another one fails at once with
	// "database is locked" instead of sleeping.
	uri := "file:" + filepath.Join(t.TempDir(), "test.sqlite") +
		"?_pragma=busy_timeout(0)&_pragma=journal_mode(" + journal + ")"

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

// A transaction whose context is cancelled is rolled back in its turn: the
// next write never runs inside it, to be rolled back with it after it was
// acknowledged (database/sql rolls a cancelled transaction back on a
// goroutine of its own, which the turn once did not wait for).
func TestACancelledTransactionEndsBeforeTheNextWrite(t *testing.T) {
	db := openFile(t, 100)
	bg := context.Background()

	for i := range 3000 {
		ctx, cancel := context.WithCancel(bg)
		key := fmt.Sprintf("b%d", i)
		next := make(chan error, 1)
		waiting := make(chan struct{})

		go func() {
			<-waiting
			_, err := db.ExecContext(bg, "INSERT INTO t VALUES (?, 'b')", key)
			next <- err
		}()

		err := db.InTransaction(ctx, func(tx *Tx) error {
			defer close(waiting) // the next write waits for the turn now

			if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (?, 'a')", fmt.Sprintf("a%d", i)); err != nil {
				return err
			}

			cancel()

			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: the cancelled transaction ended with %v", i, err)
		}

		if err = <-next; err != nil {
			t.Fatalf("round %d: the next write: %v", i, err)
		}

		var n int
		if err = db.QueryRowContext(bg, "SELECT count(*) FROM t WHERE k = ?", key).Scan(&n); err != nil {
			t.Fatal(err)
		}

		if n != 1 {
			t.Fatalf("round %d: the next write was acknowledged and lost", i)
		}
	}

	if n := count(t, db); n != 3000 {
		t.Fatalf("%d rows, want only the 3000 next writes", n)
	}
}

// A COMMIT that fails (SQLITE_BUSY, here with a rollback journal and a
// reader holding its lock) leaves SQLite inside the transaction: it is
// rolled back before the turn is given back, so later writes commit.
func TestAFailedCommitDoesNotSwallowLaterWrites(t *testing.T) {
	db := openFileJournal(t, 100, "delete")
	bg := context.Background()

	if _, err := db.ExecContext(bg, "INSERT INTO t VALUES ('r1', ''), ('r2', '')"); err != nil {
		t.Fatal(err)
	}

	rows, err := db.QueryContext(bg, "SELECT k FROM t")
	if err != nil {
		t.Fatal(err)
	}

	rows.Next() // a read in progress, as an update's iterator keeps one

	err = db.InTransaction(bg, func(tx *Tx) error {
		_, err := tx.ExecContext(bg, "INSERT INTO t VALUES ('tx', '')")
		return err
	})
	if err == nil {
		t.Fatal("the commit went through beside a reader's lock: the test proves nothing")
	}

	_ = rows.Close()

	if _, err = db.ExecContext(bg, "INSERT INTO t VALUES ('after', '')"); err != nil {
		t.Fatal(err)
	}

	var n int
	if err = db.QueryRowContext(bg, "SELECT count(*) FROM t WHERE k IN ('after', 'tx')").Scan(&n); err != nil || n != 1 {
		t.Fatalf("the write after the failed commit: %d of it visible (want 1, and no 'tx'), %v", n, err)
	}

	if err = db.InTransaction(bg, func(tx *Tx) error { return nil }); err != nil {
		t.Fatalf("a transaction after the failed commit: %v", err)
	}
}

// Writes after Close fail, as they did on the closed pool: none takes a
// connection of its own in between.
func TestWritesAfterCloseFail(t *testing.T) {
	db := openFile(t, 100)
	bg := context.Background()

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := db.ExecContext(bg, "INSERT INTO t VALUES ('x', 'y')"); err == nil {
		t.Fatal("a write after Close went through")
	}

	if err := db.InTransaction(bg, func(tx *Tx) error { return nil }); err == nil {
		t.Fatal("a transaction after Close began")
	}
}
