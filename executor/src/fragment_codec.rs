//! How a fragment travels between nodes: a DataFusion physical plan in datafusion-proto's
//! encoding, with Shoal's own nodes encoded by this codec: [`PartitionScanExec`] as its
//! [`ScanSpec`], an UPDATE's or DELETE's [`TableWriteExec`] as its table and kind, and a
//! [`FragmentExec`] as the subtree it wraps (on the receiving node everything runs locally).
//!
//! Scans and writes are rebuilt on the receiving node from that node's catalog and run in a
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
use serde::{Deserialize, Serialize};
use shoal_coord::{Catalog, NodeId};
use shoal_storage::{Store, Txn};

use crate::scan::{PartitionScanExec, ScanSpec};
use crate::{FragmentExec, ReturningSink, RowIdAllocator, TableHandle, TableWriteExec, WriteKind};

/// One of Shoal's plan nodes as it travels.
#[derive(Debug, Serialize, Deserialize)]
enum ShoalNode {
    Scan(ScanSpec),
    /// An UPDATE or DELETE of a table; its input is the plan's one child.
    Write {
        table_id: u32,
        delete: bool,
        /// The written rows are sent back (RETURNING).
        #[serde(default)]
        returning: bool,
    },
    /// A fragment: on the receiving node, its subtree (the one child) runs as is.
    Fragment,
}

/// What the receiving side rebuilds Shoal's nodes with.
struct Reader {
    catalog: Arc<Catalog>,
    txn: Arc<Txn>,
    /// For writes: the node's storage, row ids and id, and where the rows written are kept
    /// when the sender asked for them.
    writes: Option<(Store, Arc<RowIdAllocator>, NodeId, Option<ReturningSink>)>,
}

/// Encodes and decodes Shoal's nodes; everything else is datafusion-proto's.
pub struct FragmentCodec {
    /// Present on the receiving side.
    reader: Option<Reader>,
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
            reader: Some(Reader {
                catalog,
                txn,
                writes: None,
            }),
        }
    }

    /// A codec that also rebuilds writes, as node `local_node` writing to `store` in `txn`;
    /// a write that travelled with RETURNING keeps its rows in `returned`.
    pub fn write_decoder(
        catalog: Arc<Catalog>,
        txn: Arc<Txn>,
        store: Store,
        row_ids: Arc<RowIdAllocator>,
        local_node: NodeId,
        returned: Option<ReturningSink>,
    ) -> Self {
        FragmentCodec {
            reader: Some(Reader {
                catalog,
                txn,
                writes: Some((store, row_ids, local_node, returned)),
            }),
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
        let node: ShoalNode =
            serde_json::from_slice(buf).map_err(|e| codec_error(format!("bad node: {e}")))?;
        let reader = self
            .reader
            .as_ref()
            .ok_or_else(|| codec_error("this codec only encodes".into()))?;
        let table = |id: u32| {
            reader
                .catalog
                .table_by_id(id)
                .map(|def| TableHandle::new(Arc::new(def.clone())))
                .ok_or_else(|| codec_error(format!("table {id} is not in this node's catalog")))
        };
        match (node, inputs) {
            (ShoalNode::Scan(spec), []) => Ok(Arc::new(PartitionScanExec::from_spec(
                table(spec.table_id)?,
                reader.txn.clone(),
                spec,
            ))),
            (ShoalNode::Fragment, [subtree]) => Ok(subtree.clone()),
            (
                ShoalNode::Write {
                    table_id,
                    delete,
                    returning,
                },
                [input],
            ) => {
                let (store, row_ids, local_node, returned) = reader
                    .writes
                    .clone()
                    .ok_or_else(|| codec_error("writes are not taken here".into()))?;
                let kind = if delete {
                    WriteKind::Delete
                } else {
                    WriteKind::Update
                };
                if returning && returned.is_none() {
                    return Err(codec_error("RETURNING without a place for the rows".into()));
                }
                Ok(Arc::new(TableWriteExec::plain(
                    input.clone(),
                    table(table_id)?,
                    reader.txn.clone(),
                    store,
                    row_ids,
                    kind,
                    local_node,
                    returned.filter(|_| returning),
                )))
            }
            (node, _) => Err(codec_error(format!(
                "{node:?} with {} inputs",
                inputs.len()
            ))),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let shoal_node =
            if let Some(scan) = node.downcast_ref::<PartitionScanExec>() {
                ShoalNode::Scan(scan.spec().ok_or_else(|| {
                    codec_error("index lookups run where every partition is".into())
                })?)
            } else if node.is::<FragmentExec>() {
                ShoalNode::Fragment
            } else if let Some(write) = node.downcast_ref::<TableWriteExec>() {
                let (table_id, kind, returning) = write.shippable().ok_or_else(|| {
                    codec_error("only UPDATE and DELETE without ON CONFLICT travel".into())
                })?;
                ShoalNode::Write {
                    table_id,
                    delete: matches!(kind, WriteKind::Delete),
                    returning,
                }
            } else {
                return Err(codec_error(format!("{} cannot travel", node.name())));
            };
        serde_json::to_writer(buf, &shoal_node).map_err(|e| codec_error(e.to_string()))
    }
}
