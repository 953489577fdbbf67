//! Row locks: a writer of an existing row waits for the row's other writer to finish instead of
//! failing at commit.
//!
//! RocksDB's optimistic transactions only find write-write conflicts at commit, which turns every
//! contended update (pgbench's one branch row, a bank's hot account) into a serialization
//! failure. PostgreSQL makes the second writer wait for the first and then look at the row again;
//! this table gives Shoal the same waiting. Locks are exclusive, keyed by the row's storage key,
//! held until the transaction commits or rolls back, and checked for deadlocks on every wait
//! (the waits-for chain of one transaction is followed until it ends or comes back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::{Result, StorageError};

/// How often a waiter wakes to check whether its statement was cancelled.
const WAIT_SLICE: Duration = Duration::from_millis(50);

#[derive(Default)]
struct LockState {
    /// Row key → the transaction holding it.
    holders: HashMap<Vec<u8>, u64>,
    /// Waiting transaction → the transaction it waits for.
    waits_for: HashMap<u64, u64>,
}

#[derive(Default)]
pub(crate) struct LockTable {
    state: Mutex<LockState>,
    released: Condvar,
}

impl LockTable {
    /// Takes `key` for `txn`, waiting while another transaction holds it. Returns whether the
    /// lock is new (and must be released by [`LockTable::release`]).
    pub(crate) fn lock(&self, txn: u64, key: &[u8], interrupt: &AtomicBool) -> Result<bool> {
        let mut state = self.state.lock();
        loop {
            let holder = match state.holders.get(key) {
                None => {
                    state.holders.insert(key.to_vec(), txn);
                    state.waits_for.remove(&txn);
                    return Ok(true);
                }
                Some(h) if *h == txn => return Ok(false),
                Some(h) => *h,
            };
            if waits_on(&state.waits_for, holder, txn) {
                state.waits_for.remove(&txn);
                return Err(StorageError::Deadlock);
            }
            state.waits_for.insert(txn, holder);
            self.released.wait_for(&mut state, WAIT_SLICE);
            if interrupt.load(Ordering::Relaxed) {
                state.waits_for.remove(&txn);
                return Err(StorageError::Interrupted);
            }
        }
    }

    /// Gives back every lock `txn` took, waking the transactions that wait for them.
    pub(crate) fn release(&self, txn: u64, keys: &[Vec<u8>]) {
        if keys.is_empty() {
            return;
        }
        let mut state = self.state.lock();
        for k in keys {
            if state.holders.get(k) == Some(&txn) {
                state.holders.remove(k);
            }
        }
        state.waits_for.remove(&txn);
        drop(state);
        self.released.notify_all();
    }
}

/// Whether `from` waits, directly or through others, for `target`.
fn waits_on(waits_for: &HashMap<u64, u64>, mut from: u64, target: u64) -> bool {
    // The chain is acyclic (a cycle is refused before it forms), so it ends.
    for _ in 0..=waits_for.len() {
        if from == target {
            return true;
        }
        match waits_for.get(&from) {
            Some(next) => from = *next,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn second_locker_waits_until_release() {
        let table = Arc::new(LockTable::default());
        let never = Arc::new(AtomicBool::new(false));
        assert!(table.lock(1, b"k", &never).unwrap());
        assert!(!table.lock(1, b"k", &never).unwrap());
        let (t, n) = (table.clone(), never.clone());
        let started = Instant::now();
        let waiter = std::thread::spawn(move || t.lock(2, b"k", &n).map(|_| started.elapsed()));
        std::thread::sleep(Duration::from_millis(120));
        table.release(1, &[b"k".to_vec()]);
        let waited = waiter.join().unwrap().unwrap();
        assert!(waited >= Duration::from_millis(100), "waited {waited:?}");
    }

    #[test]
    fn a_cycle_is_refused_as_a_deadlock() {
        let table = Arc::new(LockTable::default());
        let never = Arc::new(AtomicBool::new(false));
        table.lock(1, b"a", &never).unwrap();
        table.lock(2, b"b", &never).unwrap();
        let (t, n) = (table.clone(), never.clone());
        let first = std::thread::spawn(move || t.lock(1, b"b", &n));
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(
            table.lock(2, b"a", &never),
            Err(StorageError::Deadlock)
        ));
        table.release(2, &[b"b".to_vec()]);
        assert!(first.join().unwrap().unwrap());
    }

    #[test]
    fn an_interrupted_waiter_gives_up() {
        let table = Arc::new(LockTable::default());
        let stop = Arc::new(AtomicBool::new(false));
        table.lock(1, b"k", &stop).unwrap();
        let (t, s) = (table.clone(), stop.clone());
        let waiter = std::thread::spawn(move || t.lock(2, b"k", &s));
        std::thread::sleep(Duration::from_millis(60));
        stop.store(true, Ordering::Relaxed);
        assert!(matches!(
            waiter.join().unwrap(),
            Err(StorageError::Interrupted)
        ));
    }
}
