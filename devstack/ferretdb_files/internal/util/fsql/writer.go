// Added by Sandesh's build (devstack/ferretdb_patches.py, patch 11).

package fsql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
)

// writer takes a database's writes one at a time, through one connection.
//
// SQLite lets one connection write to a database at a time. Writers on the
// pool's other connections met SQLITE_BUSY and slept in SQLite's busy
// handler (1, 2, 5, 10... ms) before trying again, and a connection that
// wrote after another one had committed found its page cache out of date
// and read the pages again. Waiting here for the turn, on the connection
// that wrote last, costs neither. Reads keep the pool.
//
// A pool of one connection (an in-memory database) keeps that connection
// free for reads: writes then take their turn here but use the pool.
type writer struct {
	db     *sql.DB
	turn   chan struct{}
	conn   *sql.Conn // nil only if it could not be taken, or went bad
	pin    bool
	closed bool // set by close, in its turn: later writes meet the closed pool
}

func newWriter(db *sql.DB) *writer {
	w := &writer{db: db, turn: make(chan struct{}, 1), pin: db.Stats().MaxOpenConnections != 1}

	// Taken now: a first write waiting for a pool connection, while reads
	// waiting for their turn to write hold all the others, would wait forever.
	if w.pin {
		if conn, err := db.Conn(context.Background()); err == nil {
			w.conn = conn
		}
	}

	return w
}

// wait takes the turn, or gives up with the context.
func (w *writer) wait(ctx context.Context) error {
	select {
	case w.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *writer) done() {
	<-w.turn
}

// connection is the writing connection; the caller has the turn.
func (w *writer) connection(ctx context.Context) (*sql.Conn, error) {
	if w.conn == nil {
		conn, err := w.db.Conn(ctx)
		if err != nil {
			return nil, err
		}

		w.conn = conn
	}

	return w.conn, nil
}

// unusable drops the connection after an error that says it cannot be used
// again, so the next write takes another one; it reports whether it did.
func (w *writer) unusable(err error) bool {
	if w.conn == nil || !(errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)) {
		return false
	}

	_ = w.conn.Close()
	w.conn = nil

	return true
}

// pooled says whether writes go through the pool: a pool of one connection,
// or a closed database, whose pool then refuses them.
func (w *writer) pooled() bool {
	return !w.pin || w.closed
}

// onConnection runs op on the writing connection; if op finds it unusable,
// once more on a fresh one. The caller has the turn.
func (w *writer) onConnection(ctx context.Context, op func(*sql.Conn) error) error {
	for attempt := 0; ; attempt++ {
		conn, err := w.connection(ctx)
		if err != nil {
			return err
		}

		if err = op(conn); err != nil && w.unusable(err) && attempt == 0 {
			continue
		}

		return err
	}
}

// exec runs a statement in its turn.
func (w *writer) exec(ctx context.Context, query string, args ...any) (res sql.Result, err error) {
	if err = w.wait(ctx); err != nil {
		return nil, err
	}
	defer w.done()

	if w.pooled() {
		return w.db.ExecContext(ctx, query, args...)
	}

	err = w.onConnection(ctx, func(conn *sql.Conn) (err error) {
		res, err = conn.ExecContext(ctx, query, args...)
		return err
	})

	return res, err
}

// begin starts a transaction in its turn; end gives the turn back once the
// transaction is committed or rolled back, saying which.
func (w *writer) begin(ctx context.Context) (tx *sql.Tx, end func(committed bool), err error) {
	if err = w.wait(ctx); err != nil {
		return nil, nil, err
	}

	defer func() {
		if err != nil {
			w.done()
		}
	}()

	if w.pooled() {
		tx, err = w.db.BeginTx(ctx, nil)
		return tx, func(bool) { w.done() }, err
	}

	err = w.onConnection(ctx, func(conn *sql.Conn) (err error) {
		// Not ended by ctx: database/sql would then roll the transaction
		// back on a goroutine of its own, perhaps after the turn is given
		// back, and the next write would run inside it and be rolled back
		// with it. InTransaction rolls back in its turn instead.
		tx, err = conn.BeginTx(context.WithoutCancel(ctx), nil)
		return err
	})

	return tx, w.end, err
}

// end gives the turn back after a transaction. One that did not commit may
// have left the connection inside it (SQLite keeps the transaction open when
// COMMIT fails with SQLITE_BUSY), so it is rolled back here; the error when
// no transaction is open is expected.
func (w *writer) end(committed bool) {
	defer w.done()

	if !committed && w.conn != nil {
		_, err := w.conn.ExecContext(context.Background(), "ROLLBACK")
		w.unusable(err)
	}
}

// close closes the writing connection once no write holds it; writes after
// it go to the pool, closed with the database, and fail.
func (w *writer) close() {
	w.turn <- struct{}{}
	defer w.done()

	w.closed = true

	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
}
