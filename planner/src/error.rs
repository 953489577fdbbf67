use datafusion::error::DataFusionError;
use shoal_coord::CoordError;
use thiserror::Error;

/// What went wrong while planning a statement.
#[derive(Debug, Error)]
pub enum PlannerError {
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Catalog(#[from] CoordError),
    #[error("type \"{0}\" does not exist")]
    UnknownType(String),
    #[error("{0} is not supported yet")]
    NotSupported(String),
    #[error("{0}")]
    InvalidDefinition(String),
}
