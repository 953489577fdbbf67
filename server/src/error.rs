//! The server's error type and the one place where every error gets its SQLSTATE.

use datafusion::error::DataFusionError;
use pgwire::error::{ErrorInfo, PgWireError};
use shoal_coord::CoordError;
use shoal_executor::ExecError;
use shoal_planner::PlannerError;
use shoal_storage::StorageError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Planner(#[from] PlannerError),
    #[error(transparent)]
    Catalog(#[from] CoordError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("{0}")]
    Wire(String),
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("{0} is not supported yet")]
    NotSupported(String),
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    #[error("SET TRANSACTION ISOLATION LEVEL must be called before any query")]
    IsolationAfterQuery,
    #[error("{0} can only be used in transaction blocks")]
    OutsideBlock(&'static str),
    #[error("{0} cannot run inside a transaction block")]
    InsideBlock(&'static str),
    #[error("savepoint \"{0}\" does not exist")]
    NoSuchSavepoint(String),
    #[error("cursor \"{0}\" does not exist")]
    NoSuchCursor(String),
    #[error("cursor \"{0}\" already exists")]
    DuplicateCursor(String),
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownSetting(String),
    #[error("invalid value for parameter \"{name}\": \"{value}\"")]
    InvalidSetting { name: String, value: String },
    #[error("canceling statement due to user request")]
    Canceled,
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,
    #[error("{0}")]
    InvalidText(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Internal(String),
}

impl ServerError {
    /// The SQLSTATE a client sees for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ServerError::Planner(p) => match p {
                PlannerError::DataFusion(d) => datafusion_state(d),
                PlannerError::Catalog(c) => catalog_state(c),
                PlannerError::UnknownType(_) => "42704",
                PlannerError::NotSupported(_) => "0A000",
                PlannerError::InvalidDefinition(_) => "42P16",
            },
            ServerError::Catalog(c) => catalog_state(c),
            ServerError::Exec(e) => exec_state(e),
            ServerError::Storage(s) => storage_state(s),
            ServerError::DataFusion(d) => datafusion_state(d),
            ServerError::Arrow(a) => arrow_state(&a.to_string()),
            ServerError::Wire(_) => "XX000",
            ServerError::Syntax(_) => "42601",
            ServerError::NotSupported(_) => "0A000",
            ServerError::InFailedTransaction => "25P02",
            ServerError::OutsideBlock(_) => "25P01",
            ServerError::IsolationAfterQuery | ServerError::InsideBlock(_) => "25001",
            ServerError::NoSuchSavepoint(_) => "3B001",
            ServerError::NoSuchCursor(_) => "34000",
            ServerError::DuplicateCursor(_) => "42P03",
            ServerError::UnknownSetting(_) => "42704",
            ServerError::InvalidSetting { .. } => "22023",
            ServerError::Canceled | ServerError::StatementTimeout => "57014",
            ServerError::InvalidText(_) => "22P02",
            ServerError::Protocol(_) => "08P01",
            ServerError::Internal(_) => "XX000",
        }
    }

    /// READ COMMITTED: a row the statement writes changed after its snapshot, so the
    /// statement must run again on a new one (see `shoal_storage::Isolation`).
    pub fn needs_statement_restart(&self) -> bool {
        matches!(
            self.exec_cause(),
            Some(ExecError::Storage(
                StorageError::RowChangedSinceStatementStart
            ))
        ) || matches!(
            self.storage_cause(),
            Some(StorageError::RowChangedSinceStatementStart)
        )
    }

    /// A cluster moved a partition under the statement (its leader changed, it is being
    /// moved, or another node answered 40001): a statement outside a transaction block can
    /// run again, planned on the newer catalog, after a pause.
    pub fn cluster_moved_under_it(&self) -> bool {
        matches!(
            self.exec_cause(),
            Some(
                ExecError::LeaderChanged { .. }
                    | ExecError::Remote {
                        sqlstate: "40001",
                        ..
                    }
            ) | Some(ExecError::Storage(StorageError::PartitionMoving { .. }))
        ) || matches!(
            self.storage_cause(),
            Some(StorageError::PartitionMoving { .. })
        )
    }

    fn exec_cause(&self) -> Option<&ExecError> {
        match self {
            ServerError::Exec(e) => Some(e),
            ServerError::DataFusion(d) | ServerError::Planner(PlannerError::DataFusion(d)) => {
                match innermost(d) {
                    Inner::Exec(e) => Some(e),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn storage_cause(&self) -> Option<&StorageError> {
        match self {
            ServerError::Storage(s) => Some(s),
            ServerError::DataFusion(d) | ServerError::Planner(PlannerError::DataFusion(d)) => {
                match innermost(d) {
                    Inner::Storage(s) => Some(s),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    pub fn to_pgwire(&self) -> PgWireError {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_owned(),
            self.sqlstate().to_owned(),
            self.message(),
        )))
    }

    /// The message without the layers of wrapping DataFusion adds, in PostgreSQL's words
    /// where clients match on them.
    pub fn message(&self) -> String {
        postgres_wording(self.raw_message())
    }

    fn raw_message(&self) -> String {
        match self {
            ServerError::DataFusion(d) | ServerError::Planner(PlannerError::DataFusion(d)) => {
                match innermost(d) {
                    Inner::Exec(e) => e.to_string(),
                    Inner::Storage(s) => s.to_string(),
                    Inner::Df(d) => strip_df_prefix(&d.to_string()),
                }
            }
            other => other.to_string(),
        }
    }
}

fn postgres_wording(m: String) -> String {
    if let Some(rest) = m.strip_prefix("table '") {
        if let Some(name) = rest.strip_suffix("' not found") {
            let short = name.rsplit('.').next().unwrap_or(name);
            return format!("relation \"{short}\" does not exist");
        }
    }
    if m.contains("Divide by zero") {
        return "division by zero".into();
    }
    if let Some(rest) = m.strip_prefix("Column '") {
        if let Some((col, _)) = rest.split_once("' is declared as non-nullable") {
            return format!("null value in column \"{col}\" violates not-null constraint");
        }
    }
    if let Some(rest) = m.strip_prefix("Schema error: No field named ") {
        return format!(
            "column {} does not exist",
            rest.split('.')
                .next_back()
                .unwrap_or(rest)
                .trim_end_matches('.')
        );
    }
    m
}

fn strip_df_prefix(s: &str) -> String {
    let mut s = s.trim();
    for prefix in [
        "Error during planning: ",
        "Execution error: ",
        "Arrow error: ",
        "External error: ",
        "This feature is not implemented: ",
        "SQL error: ",
        "Schema error: ",
        "Cast error: ",
        "Invalid argument error: ",
    ] {
        while let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
        }
    }
    s.to_string()
}

enum Inner<'a> {
    Exec(&'a ExecError),
    Storage(&'a StorageError),
    Df(&'a DataFusionError),
}

fn innermost(e: &DataFusionError) -> Inner<'_> {
    match e {
        DataFusionError::External(boxed) => {
            if let Some(x) = boxed.downcast_ref::<ExecError>() {
                return Inner::Exec(x);
            }
            if let Some(x) = boxed.downcast_ref::<StorageError>() {
                return Inner::Storage(x);
            }
            if let Some(x) = boxed.downcast_ref::<DataFusionError>() {
                return innermost(x);
            }
            Inner::Df(e)
        }
        DataFusionError::Context(_, inner) => innermost(inner),
        DataFusionError::Shared(inner) => innermost(inner),
        DataFusionError::Diagnostic(_, inner) => innermost(inner),
        DataFusionError::Collection(list) if !list.is_empty() => innermost(&list[0]),
        other => Inner::Df(other),
    }
}

/// The SQLSTATE of a DataFusion error (also sent along with errors of fragments run for
/// other nodes).
pub fn datafusion_state(e: &DataFusionError) -> &'static str {
    match innermost(e) {
        Inner::Exec(x) => exec_state(x),
        Inner::Storage(s) => storage_state(s),
        Inner::Df(d) => {
            let text = d.to_string();
            match d {
                _ if text.contains("is declared as non-nullable") => "23502",
                _ if text.contains("does not support") || text.contains("not supported") => "0A000",
                DataFusionError::SQL(..) => "42601",
                DataFusionError::NotImplemented(_) => "0A000",
                DataFusionError::ResourcesExhausted(_) => "53200",
                DataFusionError::SchemaError(..) => {
                    if text.contains("No field named") || text.contains("not found") {
                        "42703"
                    } else {
                        "42P01"
                    }
                }
                DataFusionError::Plan(_) => {
                    if text.contains("table") && text.contains("not found") {
                        "42P01"
                    } else if text.contains("No field named") {
                        "42703"
                    } else if text.contains("Invalid function")
                        || text.contains("function") && text.contains("not found")
                    {
                        "42883"
                    } else {
                        "42601"
                    }
                }
                DataFusionError::ArrowError(a, _) => arrow_state(&a.to_string()),
                DataFusionError::Execution(_) => {
                    if text.contains("Divide by zero") || text.contains("division by zero") {
                        "22012"
                    } else if text.contains("Cannot cast") || text.contains("Cast error") {
                        "22P02"
                    } else if text.contains("overflow") || text.contains("out of range") {
                        "22003"
                    } else if text.contains("unrecognized configuration parameter") {
                        "42704"
                    } else {
                        "XX000"
                    }
                }
                _ => "XX000",
            }
        }
    }
}

fn arrow_state(text: &str) -> &'static str {
    if text.contains("is declared as non-nullable") {
        "23502"
    } else if text.contains("Divide by zero") {
        "22012"
    } else if text.contains("Cast error")
        || text.contains("Cannot cast")
        || text.contains("Parser error")
    {
        "22P02"
    } else if text.contains("overflow") {
        "22003"
    } else {
        "XX000"
    }
}

fn catalog_state(c: &CoordError) -> &'static str {
    match c {
        CoordError::SchemaNotFound(_) => "3F000",
        CoordError::SchemaExists(_) => "42P06",
        CoordError::SchemaNotEmpty(_) => "2BP01",
        CoordError::RelationNotFound(_) => "42P01",
        CoordError::RelationExists(_) => "42P07",
        CoordError::ColumnNotFound { .. } => "42703",
        CoordError::ColumnExists { .. } => "42701",
        CoordError::InvalidDefinition(_) => "42P16",
        CoordError::CatalogChanged
        | CoordError::ConfigurationChanged { .. }
        | CoordError::LeaderChanged { .. } => "40001",
        CoordError::DataCommitFailed(_) => "40001",
        CoordError::Io { .. } | CoordError::Corrupt { .. } => "58030",
        CoordError::NoLiveNodes | CoordError::Unavailable(_) | CoordError::Join(_) => "58000",
    }
}

fn exec_state(e: &ExecError) -> &'static str {
    match e {
        ExecError::Storage(s) => storage_state(s),
        ExecError::Metadata(c) => catalog_state(c),
        ExecError::UniqueViolation { .. } => "23505",
        ExecError::NotNullViolation { .. } => "23502",
        ExecError::StringTooLong { .. } => "22001",
        ExecError::InvalidInput { .. } | ExecError::InvalidJson { .. } => "22P02",
        ExecError::UnsupportedUnicodeEscape => "22P05",
        ExecError::InvalidParameterValue(_) => "22023",
        ExecError::DatetimeFieldOutOfRange(_) => "22008",
        ExecError::InvalidDatetimeFormat(_) => "22007",
        ExecError::Arrow(a) => arrow_state(&a.to_string()),
        ExecError::TaskFailed(_) => "XX000",
        ExecError::PartitionsElsewhere { .. } => "0A000",
        ExecError::PartitionUnavailable { .. } | ExecError::WriteLeaderDown { .. } => "58000",
        ExecError::LeaderChanged { .. }
        | ExecError::PartGone { .. }
        | ExecError::TransactionAborted { .. } => "40001",
        ExecError::PartUnreachable { .. } => "58000",
        ExecError::PartPrepared { .. } => "XX000",
        ExecError::CommitOutcomeUnknown { .. } => "08007",
        ExecError::Remote { sqlstate, .. } => sqlstate,
    }
}

fn storage_state(s: &StorageError) -> &'static str {
    match s {
        StorageError::WriteConflict
        | StorageError::RowChangedSinceStatementStart
        | StorageError::PreparedWriterActive
        | StorageError::PartitionMoving { .. }
        | StorageError::LeadershipUncertain
        | StorageError::ReplicationRefused(_) => "40001",
        // The commit applied on the leader, but it cannot promise the followers have it.
        StorageError::ReplicationUnconfirmed(_) => "08007",
        StorageError::PartitionSealed { .. }
        | StorageError::LogGap { .. }
        | StorageError::LogDiverged { .. }
        | StorageError::LogTruncated { .. } => "XX000",
        StorageError::Deadlock => "40P01",
        StorageError::Interrupted => "57014",
        StorageError::DuplicateKey => "23505",
        StorageError::UnsupportedType(_) | StorageError::UnsupportedKeyType(_) => "0A000",
        StorageError::CorruptRow(_) => "XX001",
        StorageError::TransactionFinished => "25P01",
        StorageError::TransactionPrepared => "XX000",
        StorageError::Engine(_) | StorageError::DirectoryLocked { .. } => "58030",
    }
}

impl From<PgWireError> for ServerError {
    fn from(e: PgWireError) -> Self {
        ServerError::Wire(e.to_string())
    }
}

pub type ServerResult<T> = Result<T, ServerError>;
