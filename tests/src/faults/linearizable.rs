//! A linearizability checker for one register with read, write and compare-and-set, in the
//! style of Wing and Gong with Lowe's memoization (as Knossos and Porcupine do it).
//!
//! A history is a list of calls, each with the time it was invoked and the time it returned.
//! It is linearizable when every call can be given one instant inside its own interval such
//! that, taken in that order, the calls behave as on a single register. A call whose outcome
//! is unknown (a timeout, a lost connection) has no return time: it may take effect at any
//! instant after its invocation, or never. A read with an unknown outcome tells nothing and is
//! left out by the caller.
//!
//! The search linearizes one call at a time. The next call may be any pending one invoked
//! before the earliest return among the pending calls with a known outcome (that one must come
//! before anything invoked after it returned). States already explored, (set of linearized
//! calls, register value), are remembered, so each is searched once.

use std::collections::HashSet;

/// What a call did, and what it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned this value.
    Read(i64),
    /// A write of this value.
    Write(i64),
    /// Compare-and-set from `from` to `to`; `swapped` is what it answered (for a call with an
    /// unknown outcome, whether it swapped is unknown too and the field is ignored).
    Cas { from: i64, to: i64, swapped: bool },
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub op: RegisterOp,
    /// Microseconds since the test began.
    pub invoked: u64,
    /// None when the outcome is unknown.
    pub returned: Option<u64>,
}

/// Gives up after this many explored states: a history with so many concurrent unknown
/// outcomes cannot be checked in reasonable time, and the test says so rather than pass.
const MAX_STATES: usize = 5_000_000;

/// `Ok` when `calls` on a register that starts at `initial` are linearizable; otherwise the
/// longest prefix of a linearization found and the calls that could not follow it.
pub fn check_register(initial: i64, calls: &[Call]) -> Result<(), String> {
    let mut calls: Vec<Call> = calls.to_vec();
    calls.sort_by_key(|c| c.invoked);
    let words = calls.len().div_ceil(64);
    let known = calls.iter().filter(|c| c.returned.is_some()).count();

    let mut seen: HashSet<(Vec<u64>, i64)> = HashSet::new();
    // Depth-first: (linearized set, value, how many known calls it holds).
    let mut stack: Vec<(Vec<u64>, i64, usize)> = vec![(vec![0; words], initial, 0)];
    let mut deepest: (usize, i64) = (0, initial);
    while let Some((done, value, known_done)) = stack.pop() {
        if known_done == known {
            return Ok(());
        }
        if known_done > deepest.0 {
            deepest = (known_done, value);
        }
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        let earliest_return = calls
            .iter()
            .enumerate()
            .filter(|(i, _)| !is_done(*i))
            .filter_map(|(_, c)| c.returned)
            .min()
            .unwrap_or(u64::MAX);
        for (i, call) in calls.iter().enumerate() {
            if call.invoked > earliest_return {
                break;
            }
            if is_done(i) {
                continue;
            }
            let Some(next) = apply(call, value) else {
                continue;
            };
            let mut after = done.clone();
            after[i / 64] |= 1 << (i % 64);
            if seen.insert((after.clone(), next)) {
                if seen.len() > MAX_STATES {
                    return Err(format!(
                        "gave up after {MAX_STATES} states ({} calls)",
                        calls.len()
                    ));
                }
                let known_after = known_done + usize::from(call.returned.is_some());
                stack.push((after, next, known_after));
            }
        }
    }
    Err(format!(
        "not linearizable: at most {} of {known} calls with known outcomes line up (the register \
         then holds {}); history: {:?}",
        deepest.0, deepest.1, calls
    ))
}

/// The register's value after `call` at `value`, or None when the call could not have
/// answered what it did there (or, for an unknown outcome, would have had no effect).
fn apply(call: &Call, value: i64) -> Option<i64> {
    match (call.op, call.returned.is_some()) {
        (RegisterOp::Read(v), _) => (v == value).then_some(value),
        (RegisterOp::Write(v), _) => Some(v),
        (RegisterOp::Cas { from, to, swapped }, true) => match (swapped, from == value) {
            (true, true) => Some(to),
            (false, false) => Some(value),
            _ => None,
        },
        (RegisterOp::Cas { from, to, .. }, false) => (from == value).then_some(to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: RegisterOp, invoked: u64, returned: Option<u64>) -> Call {
        Call {
            op,
            invoked,
            returned,
        }
    }
    use RegisterOp::*;

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            call(Write(1), 0, Some(1)),
            call(Read(1), 2, Some(3)),
            call(
                Cas {
                    from: 1,
                    to: 2,
                    swapped: true,
                },
                4,
                Some(5),
            ),
            call(
                Cas {
                    from: 1,
                    to: 3,
                    swapped: false,
                },
                6,
                Some(7),
            ),
            call(Read(2), 8, Some(9)),
        ];
        assert_eq!(check_register(0, &h), Ok(()));
    }

    #[test]
    fn a_stale_read_after_a_write_returned_is_caught() {
        let h = [call(Write(1), 0, Some(1)), call(Read(0), 2, Some(3))];
        assert!(check_register(0, &h).is_err());
    }

    #[test]
    fn concurrent_calls_may_take_effect_in_either_order() {
        // The read overlaps the write: it may see the old value or the new.
        for seen in [0, 1] {
            let h = [call(Write(1), 0, Some(10)), call(Read(seen), 5, Some(6))];
            assert_eq!(check_register(0, &h), Ok(()), "read of {seen}");
        }
        // Two reads in sequence, both during the write, cannot see new then old.
        let h = [
            call(Write(1), 0, Some(10)),
            call(Read(1), 2, Some(3)),
            call(Read(0), 4, Some(5)),
        ];
        assert!(check_register(0, &h).is_err());
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never() {
        let late = [
            call(Write(7), 0, None),
            call(Read(0), 5, Some(6)),
            call(Read(7), 100, Some(101)),
        ];
        assert_eq!(check_register(0, &late), Ok(()));
        let never = [call(Write(7), 0, None), call(Read(0), 100, Some(101))];
        assert_eq!(check_register(0, &never), Ok(()));
        // But not before it was invoked.
        let early = [call(Read(7), 0, Some(1)), call(Write(7), 5, None)];
        assert!(check_register(0, &early).is_err());
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let h = [
            call(Write(1), 0, Some(1)),
            call(Write(2), 2, Some(3)),
            call(Read(1), 4, Some(5)),
        ];
        assert!(check_register(0, &h).is_err());
    }

    #[test]
    fn two_swaps_from_the_same_value_cannot_both_succeed() {
        let cas = |to| Cas {
            from: 0,
            to,
            swapped: true,
        };
        let h = [call(cas(1), 0, Some(10)), call(cas(2), 1, Some(9))];
        assert!(check_register(0, &h).is_err());
    }
}
