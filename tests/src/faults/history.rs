//! What a client saw: every operation's outcome, classified the way a careful client must.
//!
//! - **ok**: acknowledged.
//! - **failed**: definitely not applied: refused before it was sent, rolled back before its
//!   COMMIT was sent, or answered with an error that PostgreSQL defines as "nothing happened"
//!   (serialization failure, deadlock, unique violation).
//! - **unknown**: anything else: a timeout, a connection lost mid-statement, an error during
//!   COMMIT that does not say the transaction rolled back (08007 says exactly that the outcome
//!   is unknown). It may have been applied or not, and the checks allow both; it is never
//!   retried blindly.

use std::time::Duration;

use tokio::time::Instant;

/// How long one operation may take before its outcome counts as unknown (longer than a
/// failover: a lease of 2 s plus the promotion).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Unknown,
}

/// SQLSTATEs after which the statement (or the transaction) certainly had no effect.
const NOTHING_HAPPENED: &[&str] = &["40001", "40P01", "23505", "55P03", "53300", "57P03"];

/// The outcome of a statement that ended with `error`.
pub fn outcome_of(error: &tokio_postgres::Error) -> Outcome {
    match error.code() {
        Some(code) if NOTHING_HAPPENED.contains(&code.code()) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// Microseconds since the run began: the time base of every history.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn micros(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::start()
    }
}

/// A client's connection to one of the nodes, made again (to the next node) after a failure.
pub struct Session {
    targets: Vec<String>,
    next: usize,
    client: Option<tokio_postgres::Client>,
}

impl Session {
    /// A session over the nodes' connection strings, starting with `first`.
    pub fn new(targets: Vec<String>, first: usize) -> Session {
        Session {
            targets,
            next: first,
            client: None,
        }
    }

    /// The connected client, connecting first when there is none. None when the node tried
    /// could not be reached (the caller waits a little; the next call tries the next node).
    pub async fn client(&mut self) -> Option<&tokio_postgres::Client> {
        if self.client.is_none() {
            let target = &self.targets[self.next % self.targets.len()];
            self.next += 1;
            let connecting = tokio_postgres::connect(target, tokio_postgres::NoTls);
            match tokio::time::timeout(Duration::from_secs(2), connecting).await {
                Ok(Ok((client, connection))) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    self.client = Some(client);
                }
                _ => return None,
            }
        }
        self.client.as_ref()
    }

    /// Forgets the connection: after a timeout or a lost connection its state is unknown.
    pub fn reset(&mut self) {
        self.client = None;
    }
}

/// Why a statement did not succeed: its outcome, whether its connection is no longer usable
/// (lost, or in an unknown state after a timeout), and what happened, in words.
#[derive(Debug, Clone)]
pub struct Failure {
    pub outcome: Outcome,
    pub connection_lost: bool,
    pub detail: String,
}

/// Runs `statement` with [`OPERATION_TIMEOUT`].
pub async fn bounded<T>(
    statement: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(OPERATION_TIMEOUT, statement).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure {
            outcome: outcome_of(&e),
            connection_lost: e.as_db_error().is_none(),
            detail: match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            },
        }),
        Err(_) => Err(Failure {
            outcome: Outcome::Unknown,
            connection_lost: true,
            detail: format!("no answer within {OPERATION_TIMEOUT:?}"),
        }),
    }
}

/// Counts of outcomes, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

impl Tally {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} failed, {} unknown",
            self.ok, self.failed, self.unknown
        )
    }
}
