//! Resident data: chunks of a partition's columns kept where the operators read them (device
//! memory, or host memory for the executor's decoded chunks), bounded in bytes, the least
//! recently used going first.
//!
//! A chunk is named by a [`ChunkId`]: its source (which the executor builds from a table,
//! partition, the partition's version and the columns read, so a write to the partition makes
//! every older name stale) and the rows it holds. Two chunks with one name hold the same values;
//! a stale name is never asked for again and leaves as the least recently used.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

/// The name of a chunk of rows: rows `first_row..first_row + rows` of `source`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkId {
    pub source: Arc<str>,
    pub first_row: u64,
    pub rows: u64,
}

impl ChunkId {
    /// The name of rows `offset..offset + rows` of this chunk.
    pub fn slice(&self, offset: usize, rows: usize) -> ChunkId {
        ChunkId {
            source: self.source.clone(),
            first_row: self.first_row + offset as u64,
            rows: rows as u64,
        }
    }
}

/// Values of type `V` under keys `K`, at most `limit` bytes of them.
#[derive(Debug)]
pub struct ResidentSet<K, V> {
    limit: usize,
    inner: Mutex<Entries<K, V>>,
}

#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, Entry<V>>,
    used: usize,
    clock: u64,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    bytes: usize,
    last_used: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> ResidentSet<K, V> {
    pub fn new(limit: usize) -> Self {
        ResidentSet {
            limit,
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                used: 0,
                clock: 0,
            }),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.inner.lock().used
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.inner.lock();
        inner.clock += 1;
        let now = inner.clock;
        inner.map.get_mut(key).map(|e| {
            e.last_used = now;
            e.value.clone()
        })
    }

    /// Keeps `value` (replacing what `key` held), making room by dropping the least recently
    /// used entries; false, keeping nothing, when it is larger than the whole limit.
    pub fn insert(&self, key: K, value: V, bytes: usize) -> bool {
        if bytes > self.limit {
            return false;
        }
        let mut inner = self.inner.lock();
        if let Some(old) = inner.map.remove(&key) {
            inner.used -= old.bytes;
        }
        while inner.used + bytes > self.limit {
            let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.used -= e.bytes;
            }
        }
        inner.clock += 1;
        let last_used = inner.clock;
        inner.used += bytes;
        inner.map.insert(
            key,
            Entry {
                value,
                bytes,
                last_used,
            },
        );
        true
    }

    pub fn remove(&self, key: &K) {
        let mut inner = self.inner.lock();
        if let Some(e) = inner.map.remove(key) {
            inner.used -= e.bytes;
        }
    }

    /// Drops every entry whose key `stale` says.
    pub fn remove_where(&self, stale: impl Fn(&K) -> bool) {
        let mut inner = self.inner.lock();
        let keys: Vec<K> = inner.map.keys().filter(|k| stale(k)).cloned().collect();
        for k in keys {
            if let Some(e) = inner.map.remove(&k) {
                inner.used -= e.bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_leave_first_and_nothing_exceeds_the_limit() {
        let set = ResidentSet::new(100);
        assert!(set.insert("a", 1, 40));
        assert!(set.insert("b", 2, 40));
        assert_eq!(set.get(&"a"), Some(1));
        // "b" is the least recently used now.
        assert!(set.insert("c", 3, 40));
        assert_eq!(set.get(&"b"), None);
        assert_eq!((set.get(&"a"), set.get(&"c")), (Some(1), Some(3)));
        assert_eq!(set.used(), 80);
        assert!(!set.insert("huge", 4, 101));
        assert_eq!(set.used(), 80);
        assert!(set.insert("a", 5, 10));
        assert_eq!((set.get(&"a"), set.used()), (Some(5), 50));
        set.remove_where(|k| *k == "c");
        assert_eq!((set.get(&"c"), set.used()), (None, 10));
        set.remove(&"a");
        assert_eq!(set.used(), 0);
    }

    #[test]
    fn a_slice_of_a_chunk_names_its_rows() {
        let id = ChunkId {
            source: "t1.p0@3".into(),
            first_row: 1000,
            rows: 500,
        };
        let part = id.slice(250, 250);
        assert_eq!((part.first_row, part.rows), (1250, 250));
        assert_ne!(part, id);
        assert_eq!(id.slice(0, 500), id);
    }
}
