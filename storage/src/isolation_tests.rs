//! Row locks and isolation levels: writers of one row at READ COMMITTED and REPEATABLE READ,
//! deadlocks and interrupted waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::tests::store;
use crate::{keys, Isolation, Result, StorageError, Store, Txn};

/// Two transactions at `isolation` write the same existing row; returns what the second
/// one's write reported once the first committed, and how long it waited.
struct SecondWriter {
    _dir: tempfile::TempDir,
    store: Store,
    result: Result<()>,
    waited: Duration,
    txn: Arc<Txn>,
}

fn second_writer_of_a_row(isolation: Isolation) -> SecondWriter {
    let (dir, s) = store();
    let row = keys::row_key(3, 0, b"k");
    let setup = s.begin();
    setup.put(&row, b"0").unwrap();
    setup.commit().unwrap();
    let first = s.begin_with(isolation);
    let second = Arc::new(s.begin_with(isolation));
    first.put(&row, b"1").unwrap();
    let (waiter, r) = (second.clone(), row.clone());
    let started = Instant::now();
    let handle = std::thread::spawn(move || waiter.put(&r, b"2"));
    std::thread::sleep(Duration::from_millis(150));
    first.commit().unwrap();
    let result = handle.join().unwrap();
    SecondWriter {
        _dir: dir,
        store: s,
        result,
        waited: started.elapsed(),
        txn: second,
    }
}

#[test]
fn read_committed_writer_waits_then_restarts_on_the_new_row() {
    let w = second_writer_of_a_row(Isolation::ReadCommitted);
    let (s, second) = (&w.store, &w.txn);
    assert!(w.waited >= Duration::from_millis(150));
    assert!(matches!(
        w.result,
        Err(StorageError::RowChangedSinceStatementStart)
    ));
    // The statement runs again on a new snapshot: it sees the first writer's row.
    let row = keys::row_key(3, 0, b"k");
    second.new_statement_snapshot().unwrap();
    assert_eq!(second.get(&row).unwrap().unwrap(), b"1");
    second.put(&row, b"12").unwrap();
    second.commit().unwrap();
    assert_eq!(s.begin().get(&row).unwrap().unwrap(), b"12");
}

#[test]
fn repeatable_read_writer_waits_then_fails() {
    let w = second_writer_of_a_row(Isolation::RepeatableRead);
    assert!(w.waited >= Duration::from_millis(150));
    assert!(matches!(w.result, Err(StorageError::WriteConflict)));
}

#[test]
fn read_committed_statements_see_commits_made_between_them() {
    let (_d, s) = store();
    let row = keys::row_key(3, 0, b"k");
    let reader = s.begin_with(Isolation::ReadCommitted);
    assert!(reader.get(&row).unwrap().is_none());
    let writer = s.begin();
    writer.put(&row, b"v").unwrap();
    writer.commit().unwrap();
    assert!(reader.get(&row).unwrap().is_none());
    reader.new_statement_snapshot().unwrap();
    assert_eq!(reader.get(&row).unwrap().unwrap(), b"v");
}

#[test]
fn crossed_row_writes_end_in_one_deadlock_error() {
    let (_d, s) = store();
    let (a, b) = (keys::row_key(3, 0, b"a"), keys::row_key(3, 0, b"b"));
    let setup = s.begin();
    setup.put(&a, b"0").unwrap();
    setup.put(&b, b"0").unwrap();
    setup.commit().unwrap();
    let one = Arc::new(s.begin_with(Isolation::ReadCommitted));
    let two = s.begin_with(Isolation::ReadCommitted);
    one.put(&a, b"1").unwrap();
    two.put(&b, b"2").unwrap();
    let (t, k) = (one.clone(), b.clone());
    let handle = std::thread::spawn(move || t.put(&k, b"1"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(matches!(two.put(&a, b"2"), Err(StorageError::Deadlock)));
    two.rollback();
    handle.join().unwrap().unwrap();
    one.commit().unwrap();
}

#[test]
fn an_interrupted_lock_wait_gives_up() {
    let (_d, s) = store();
    let row = keys::row_key(3, 0, b"k");
    let setup = s.begin();
    setup.put(&row, b"0").unwrap();
    setup.commit().unwrap();
    let holder = s.begin_with(Isolation::ReadCommitted);
    holder.put(&row, b"1").unwrap();
    let waiter = Arc::new(s.begin_with(Isolation::ReadCommitted));
    let (w, r) = (waiter.clone(), row.clone());
    let handle = std::thread::spawn(move || w.put(&r, b"2"));
    std::thread::sleep(Duration::from_millis(80));
    waiter.interrupt();
    assert!(matches!(
        handle.join().unwrap(),
        Err(StorageError::Interrupted)
    ));
}
