//! SQL cursors: `DECLARE name CURSOR [WITH HOLD] FOR query`, `FETCH`, `CLOSE`.
//!
//! A cursor runs its query once, at DECLARE, in the declaring statement's snapshot (as in
//! PostgreSQL, later writes of the transaction are not seen by the cursor), and keeps the rows
//! in memory; FETCH then moves over them in either direction. A cursor without HOLD ends with
//! its transaction; one WITH HOLD survives COMMIT (it is already materialized, which is what
//! PostgreSQL does at COMMIT) and is dropped with a rolled-back declaring transaction.

use std::collections::HashMap;

use datafusion::arrow::array::UInt64Array;
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, Declare, DeclareType, FetchDirection, Ident, Statement, Value, ValueWithSpan,
};

use super::{transaction, Outcome, Session};
use crate::error::{ServerError, ServerResult};

pub(crate) struct Cursor {
    schema: SchemaRef,
    rows: RecordBatch,
    /// 0 before the first row, 1..=n on a row, n + 1 after the last (PostgreSQL's model).
    position: usize,
    hold: bool,
    /// Declared in the open transaction block: a rollback of the block drops it.
    declared_in_block: bool,
}

pub(crate) type Cursors = HashMap<String, Cursor>;

/// Where one FETCH goes, relative to or independent of the position.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Movement {
    Forward(usize),
    Backward(usize),
    Absolute(i64),
    Relative(i64),
}

impl Cursor {
    /// The rows a movement passes over (in the order it passes them), and the new position.
    fn plan(&self, movement: Movement) -> (Vec<u64>, usize) {
        let n = self.rows.num_rows();
        let pos = self.position;
        match movement {
            Movement::Forward(count) => {
                let last = pos.saturating_add(count).min(n);
                let rows = ((pos + 1)..=last).map(|r| r as u64 - 1).collect();
                let end = if pos.saturating_add(count) > n {
                    n + 1
                } else {
                    pos + count
                };
                (rows, end)
            }
            Movement::Backward(count) => {
                let first = pos.saturating_sub(count).max(1);
                let rows = (first..pos.min(n + 1))
                    .rev()
                    .map(|r| r as u64 - 1)
                    .collect();
                (rows, pos.saturating_sub(count))
            }
            Movement::Absolute(k) => land_on(if k >= 0 { k } else { n as i64 + 1 + k }, n),
            Movement::Relative(k) => land_on((pos as i64).saturating_add(k), n),
        }
    }
}

/// The row at 1-based `target` of `n`, or no row and the position before the first or after
/// the last row when `target` is off either end.
fn land_on(target: i64, n: usize) -> (Vec<u64>, usize) {
    if target >= 1 && target <= n as i64 {
        (vec![target as u64 - 1], target as usize)
    } else if target <= 0 {
        (vec![], 0)
    } else {
        (vec![], n + 1)
    }
}

fn count_of(limit: &ValueWithSpan) -> ServerResult<i64> {
    match &limit.value {
        Value::Number(n, _) => n
            .parse()
            .map_err(|_| ServerError::Syntax(format!("bad FETCH count {n}"))),
        other => Err(ServerError::Syntax(format!("bad FETCH count {other}"))),
    }
}

/// A signed count as a movement: a negative FORWARD count goes backward, as in PostgreSQL.
fn forward(count: i64) -> Movement {
    if count >= 0 {
        Movement::Forward(count as usize)
    } else {
        Movement::Backward(count.unsigned_abs() as usize)
    }
}

fn movement_of(direction: &FetchDirection) -> ServerResult<Movement> {
    Ok(match direction {
        FetchDirection::Next => Movement::Forward(1),
        FetchDirection::Prior => Movement::Backward(1),
        FetchDirection::First => Movement::Absolute(1),
        FetchDirection::Last => Movement::Absolute(-1),
        FetchDirection::Count { limit } => forward(count_of(limit)?),
        FetchDirection::Forward { limit: None } => Movement::Forward(1),
        FetchDirection::Forward { limit: Some(l) } => forward(count_of(l)?),
        FetchDirection::All | FetchDirection::ForwardAll => Movement::Forward(usize::MAX),
        FetchDirection::Backward { limit: None } => Movement::Backward(1),
        FetchDirection::Backward { limit: Some(l) } => forward(count_of(l)?.saturating_neg()),
        FetchDirection::BackwardAll => Movement::Backward(usize::MAX),
        FetchDirection::Absolute { limit } => Movement::Absolute(count_of(limit)?),
        FetchDirection::Relative { limit } => Movement::Relative(count_of(limit)?),
    })
}

impl Session {
    pub(super) async fn declare_cursor(
        &self,
        mut stmts: Vec<Declare>,
        params: Option<ParamValues>,
    ) -> ServerResult<Outcome> {
        if stmts.len() != 1 {
            return Err(ServerError::Syntax("DECLARE takes one cursor".into()));
        }
        let declare = stmts.remove(0);
        let (Some(DeclareType::Cursor), Some(query), [name]) = (
            declare.declare_type,
            declare.for_query,
            declare.names.as_slice(),
        ) else {
            return Err(ServerError::NotSupported(
                "DECLARE other than DECLARE name CURSOR FOR query".into(),
            ));
        };
        if declare.binary == Some(true) {
            return Err(ServerError::NotSupported("BINARY cursors".into()));
        }
        let hold = declare.hold == Some(true);
        let in_block = self.in_block();
        if !hold && !in_block {
            return Err(ServerError::OutsideBlock("DECLARE CURSOR"));
        }
        let name = cursor_name(name);
        if self.cursors.lock().contains_key(&name) {
            return Err(ServerError::DuplicateCursor(name));
        }
        let outcome = self
            .run_dml_or_query(Statement::Query(query), params)
            .await?;
        let Outcome::Rows { schema, stream, .. } = outcome else {
            return Err(ServerError::Internal(
                "a cursor query returned no rows".into(),
            ));
        };
        let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream).await?;
        let rows = concat_batches(&schema, &batches)?;
        let cursor = Cursor {
            schema,
            rows,
            position: 0,
            hold,
            declared_in_block: in_block,
        };
        // A session runs one statement at a time, so the name checked above is still free.
        self.cursors.lock().insert(name, cursor);
        Ok(Outcome::tag("DECLARE CURSOR"))
    }

    pub(super) fn fetch(&self, name: &Ident, direction: &FetchDirection) -> ServerResult<Outcome> {
        let movement = movement_of(direction)?;
        let name = cursor_name(name);
        let mut cursors = self.cursors.lock();
        let cursor = cursors
            .get_mut(&name)
            .ok_or(ServerError::NoSuchCursor(name))?;
        let (rows, position) = cursor.plan(movement);
        let batch = take_record_batch(&cursor.rows, &UInt64Array::from(rows))?;
        cursor.position = position;
        Ok(transaction::rows_outcome(
            cursor.schema.clone(),
            vec![batch],
            "FETCH",
        ))
    }

    /// The columns FETCH returns from a cursor (Describe of a FETCH or of the cursor's portal).
    pub fn cursor_schema(&self, name: &str) -> ServerResult<SchemaRef> {
        self.cursors
            .lock()
            .get(name)
            .map(|c| c.schema.clone())
            .ok_or_else(|| ServerError::NoSuchCursor(name.to_string()))
    }

    pub(super) fn close_cursor(&self, which: &CloseCursor) -> ServerResult<Outcome> {
        let mut cursors = self.cursors.lock();
        match which {
            CloseCursor::All => cursors.clear(),
            CloseCursor::Specific { name } => {
                let name = cursor_name(name);
                if cursors.remove(&name).is_none() {
                    return Err(ServerError::NoSuchCursor(name));
                }
            }
        }
        Ok(Outcome::tag("CLOSE CURSOR"))
    }

    /// At the end of a block: cursors WITH HOLD outlive a commit, nothing else does.
    pub(super) fn end_cursors(&self, committed: bool) {
        self.cursors.lock().retain(|_, c| {
            let keep = c.hold && (committed || !c.declared_in_block);
            c.declared_in_block = false;
            keep
        });
    }
}

/// A cursor's name as PostgreSQL folds it: unquoted names are lower-cased.
pub fn cursor_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The query a `DECLARE name CURSOR FOR query` runs, as a statement of its own.
pub fn declared_query(stmt: &Statement) -> Option<Statement> {
    match stmt {
        Statement::Declare { stmts } => match stmts.as_slice() {
            [Declare {
                for_query: Some(q), ..
            }] => Some(Statement::Query(q.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// The name of the cursor a DECLARE creates.
pub fn declared_name(stmt: &Statement) -> Option<String> {
    match stmt {
        Statement::Declare { stmts } => match stmts.as_slice() {
            [Declare { names, .. }] => names.first().map(cursor_name),
            _ => None,
        },
        _ => None,
    }
}

/// The cursor a FETCH reads, for the wire layer's Describe.
pub fn fetched_cursor(stmt: &Statement) -> Option<String> {
    match stmt {
        Statement::Fetch { name, .. } => Some(cursor_name(name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn cursor(n: i32) -> Cursor {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let rows = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int32Array::from((1..=n).collect::<Vec<_>>()))],
        )
        .unwrap();
        Cursor {
            schema,
            rows,
            position: 0,
            hold: false,
            declared_in_block: true,
        }
    }

    /// Applies movements in turn; each returns the 1-based rows it passed.
    fn walk(n: i32, moves: &[Movement]) -> Vec<(Vec<u64>, usize)> {
        let mut c = cursor(n);
        moves
            .iter()
            .map(|m| {
                let (rows, pos) = c.plan(*m);
                c.position = pos;
                (rows.into_iter().map(|r| r + 1).collect(), pos)
            })
            .collect()
    }

    #[test]
    fn forward_stops_after_the_last_row() {
        use Movement::*;
        assert_eq!(
            walk(5, &[Forward(2), Forward(2), Forward(2), Forward(1)]),
            vec![(vec![1, 2], 2), (vec![3, 4], 4), (vec![5], 6), (vec![], 6)]
        );
        assert_eq!(walk(3, &[Forward(usize::MAX)]), vec![(vec![1, 2, 3], 4)]);
    }

    #[test]
    fn backward_returns_rows_in_reverse_from_after_the_end() {
        use Movement::*;
        assert_eq!(
            walk(4, &[Forward(usize::MAX), Backward(2), Backward(9)]),
            vec![(vec![1, 2, 3, 4], 5), (vec![4, 3], 3), (vec![2, 1], 0)]
        );
    }

    #[test]
    fn absolute_and_relative_land_on_one_row_or_off_the_ends() {
        use Movement::*;
        assert_eq!(
            walk(
                5,
                &[
                    Absolute(-1),
                    Relative(-2),
                    Relative(0),
                    Absolute(9),
                    Absolute(0)
                ]
            ),
            vec![
                (vec![5], 5),
                (vec![3], 3),
                (vec![3], 3),
                (vec![], 6),
                (vec![], 0)
            ]
        );
    }
}
