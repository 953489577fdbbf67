//! How a fragment travels between nodes: a DataFusion physical plan in datafusion-proto's
//! encoding, with Shoal's own leaf, [`PartitionScanExec`], encoded as its [`ScanSpec`].
//!
//! The scan is rebuilt on the receiving node from that node's catalog and read through a
//! transaction of its own, so the codec that decodes holds both.

use std::fmt;
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use shoal_coord::Catalog;
use shoal_storage::Txn;

use crate::scan::{PartitionScanExec, ScanSpec};
use crate::TableHandle;

/// Encodes and decodes Shoal's leaf; everything else is datafusion-proto's.
pub struct FragmentCodec {
    /// Present on the receiving side: where scans find their tables and read through.
    reader: Option<(Arc<Catalog>, Arc<Txn>)>,
}

impl fmt::Debug for FragmentCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FragmentCodec")
    }
}

fn codec_error(message: String) -> DataFusionError {
    DataFusionError::Internal(format!("fragment codec: {message}"))
}

impl FragmentCodec {
    /// A codec that can only encode (the sending side).
    pub fn encoder() -> Self {
        FragmentCodec { reader: None }
    }

    /// A codec that rebuilds scans from `catalog`, reading through `txn`.
    pub fn decoder(catalog: Arc<Catalog>, txn: Arc<Txn>) -> Self {
        FragmentCodec {
            reader: Some((catalog, txn)),
        }
    }

    pub fn encode(plan: Arc<dyn ExecutionPlan>) -> DfResult<Vec<u8>> {
        Ok(physical_plan_to_bytes_with_extension_codec(plan, &Self::encoder())?.to_vec())
    }

    pub fn decode(&self, bytes: &[u8], ctx: &TaskContext) -> DfResult<Arc<dyn ExecutionPlan>> {
        physical_plan_from_bytes_with_extension_codec(bytes, ctx, self)
    }
}

impl PhysicalExtensionCodec for FragmentCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(codec_error("a scan has no inputs".into()));
        }
        let spec: ScanSpec =
            serde_json::from_slice(buf).map_err(|e| codec_error(format!("bad scan: {e}")))?;
        let (catalog, txn) = self
            .reader
            .as_ref()
            .ok_or_else(|| codec_error("this codec only encodes".into()))?;
        let def = catalog.table_by_id(spec.table_id).ok_or_else(|| {
            codec_error(format!(
                "table {} is not in this node's catalog",
                spec.table_id
            ))
        })?;
        let table = TableHandle::new(Arc::new(def.clone()));
        Ok(Arc::new(PartitionScanExec::from_spec(
            table,
            txn.clone(),
            spec,
        )))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let scan = node
            .downcast_ref::<PartitionScanExec>()
            .ok_or_else(|| codec_error(format!("{} cannot travel", node.name())))?;
        let spec = scan
            .spec()
            .ok_or_else(|| codec_error("index lookups run where every partition is".into()))?;
        serde_json::to_writer(buf, &spec).map_err(|e| codec_error(e.to_string()))
    }
}
