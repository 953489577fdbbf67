//! Runs a `.slt` file record by record, going on past failures, so a file's result is a count
//! of passing records and the list of what failed, not only its first error. The compatibility
//! report and the `slt-survey` binary use it; the tests that must pass use `run_file_async`.

use std::path::Path;

use sqllogictest::{DefaultColumnType, Record, RecordOutput, Runner};

use crate::slt::{connect, SimpleDb};
use crate::slt_extended::ExtendedDb;

/// Which of the two wire engines runs the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Simple query protocol, text results.
    Simple,
    /// Parse/Bind/Execute with binary results.
    Extended,
}

/// What one file did on one engine.
#[derive(Debug, Default)]
pub struct Tally {
    /// Statements and queries run (records skipped by `skipif`/`onlyif` are not counted).
    pub run: usize,
    /// Those among them that failed, each with its error as the runner words it.
    pub failures: Vec<String>,
}

impl Tally {
    pub fn passed(&self) -> usize {
        self.run - self.failures.len()
    }
}

/// Runs every record of `file` against the server at `conn`; an unparsable file or a
/// connection that cannot be made counts as one failure.
pub async fn tally_file(conn: String, file: &Path, engine: Engine) -> Tally {
    let records = match sqllogictest::parse_file::<DefaultColumnType>(file) {
        Ok(r) => r,
        Err(e) => {
            return Tally {
                run: 1,
                failures: vec![format!("unparsable: {e}")],
            }
        }
    };
    match engine {
        Engine::Simple => {
            let runner = Runner::new(move || {
                let conn = conn.clone();
                async move {
                    Ok(SimpleDb {
                        client: connect(conn).await?,
                    })
                }
            });
            tally_records(runner, records).await
        }
        Engine::Extended => {
            let runner = Runner::new(move || {
                let conn = conn.clone();
                async move {
                    Ok(ExtendedDb {
                        client: connect(conn).await?,
                    })
                }
            });
            tally_records(runner, records).await
        }
    }
}

async fn tally_records<D, M>(
    mut runner: Runner<D, M>,
    records: Vec<Record<DefaultColumnType>>,
) -> Tally
where
    D: sqllogictest::AsyncDB<ColumnType = DefaultColumnType>,
    M: sqllogictest::MakeConnection<Conn = D>,
{
    runner.add_label("postgresql");
    let mut tally = Tally::default();
    for record in records {
        if let Record::Halt { .. } = record {
            break;
        }
        // A record that its `skipif`/`onlyif` conditions skip runs to `Nothing`.
        match runner.run_async(record).await {
            Ok(RecordOutput::Nothing) => {}
            Ok(_) => tally.run += 1,
            Err(e) => {
                tally.run += 1;
                tally.failures.push(e.to_string());
            }
        }
    }
    tally
}
