//! The data every stage after the reader passes along: encoded rows ([`Rows`], [`RowsRef`]),
//! and the columnar block the sink builds from
//! them: a batch of RowBinary rows turned into one ClickHouse Native block whose columns
//! carry the table's own types, rows sorted by the table's sorting key.
//!
//! Why: ClickHouse's CPU, not the gateway's, is what stores an event. A Native block is read
//! without converting rows, and a block already in key order skips the server's sort
//! (measured on 18.16: see docs/performance.md). The work moves to the flusher's thread,
//! off the request path and never under the buffer's lock.
//!
//! The column types are data ([`ColumnType`], parsed from `system.columns`), so every
//! table and every shard's block go through this one builder:
//! [`types`] (what a type is) → [`transpose`] (rows cut into columns, once) → [`sort`] (the
//! key's order) → [`native`] (the columns' bytes, copied in that order).
//!
//! The last stage, and no I/O: ClickHouse's type grammar, RowBinary and Native layouts, the
//! sorting and sharding expressions. May import nothing of the other stages (only the shared
//! modules).

pub mod binary_type;
mod column_zone;
mod rows;

mod native;
mod nested;
mod shape;
mod shard_key;
mod sort;
mod text_order;
mod transpose;
mod types;

pub use column_zone::ColumnZone;
pub use rows::{Rows, RowsRef};
pub use shape::{Scalar, Shape};
pub use shard_key::{KeyPlan, RowKeys, ShardingKey};
pub use sort::SortKey;
pub use transpose::Cells;
use transpose::Columns;
pub use types::{ColumnType, NULL_DISCRIMINATOR, Order, Zone, leb128, put_leb128};

/// Why a block could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A column type this builder does not encode (the caller falls back to RowBinary).
    #[error("unsupported column type {0}")]
    UnsupportedType(String),
    /// A schema without columns.
    #[error("no columns")]
    NoColumns,
    /// The rows' bytes do not fit the columns' types (from this row on).
    #[error("the rows do not match the columns' types at row {row}")]
    Malformed {
        /// The first row that does not fit.
        row: usize,
    },
}

/// One column of a block: its name, the type name as the server spells it (sent in the
/// block, so it must be exactly the table's), and the parsed type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type name, as `system.columns.type` gives it.
    pub type_name: String,
    /// The parsed type.
    pub ty: ColumnType,
    /// Time zone, for sorting by calendar functions of the column.
    pub zone: Zone,
}

/// The columns of the rows, in their RowBinary order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// Columns in encoding order.
    pub columns: Vec<Column>,
}

impl Schema {
    /// A schema of `(name, type name)` columns in RowBinary order. `server_utc`: the server's
    /// time zone is UTC (a `DateTime` without a zone is in it).
    pub fn new(columns: &[(String, String)], server_utc: bool) -> Result<Self, BlockError> {
        if columns.is_empty() {
            return Err(BlockError::NoColumns);
        }
        let columns = columns
            .iter()
            .map(|(name, type_name)| {
                Ok(Column {
                    name: name.clone(),
                    type_name: type_name.clone(),
                    ty: ColumnType::parse(type_name)?,
                    zone: Zone::of(type_name, server_utc),
                })
            })
            .collect::<Result<_, BlockError>>()?;
        Ok(Self { columns })
    }
}

/// Builds Native blocks for one table: its columns and its sorting key. Cheap to share;
/// building a block allocates only that block's buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockBuilder {
    schema: Schema,
    key: SortKey,
}

impl BlockBuilder {
    /// A builder for `schema`, sorting by `key`.
    pub fn new(schema: Schema, key: SortKey) -> Self {
        Self { schema, key }
    }

    /// The columns.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The sorting key as evaluated here.
    pub fn key(&self) -> &SortKey {
        &self.key
    }

    /// The Native block of `count` RowBinary rows in `data`, sorted by the key (ties in
    /// arrival order): the same rows always give the same bytes.
    ///
    /// One pass cuts the rows into columns; the sort yields a permutation; each column is
    /// then copied out in that order. Nothing is cut twice and no row is copied whole.
    pub fn build(&self, data: &[u8], count: usize) -> Result<Vec<u8>, BlockError> {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.expect(count);
            let columns = Columns::transpose(&self.schema, data, count, scratch)?;
            let order = self.key.order(&columns, scratch);
            // Native is about RowBinary's size (smaller for LowCardinality columns).
            let mut out = transpose::take(
                &mut scratch.outputs,
                data.len() + 64 * self.schema.columns.len(),
            );
            native::write_block(&self.schema, &columns, order.as_deref(), &mut out);
            if let Some(order) = order {
                transpose::give(&mut scratch.order, order);
            }
            columns.recycle(scratch);
            Ok(out)
        })
    }

    /// Takes back a block [`BlockBuilder::build`] returned, once its insert is done, so the
    /// next block on this thread is written into memory already mapped: a fresh buffer per
    /// batch made the flusher fault in the whole block's pages (tens of MB a second at high
    /// rates) every time. One buffer is kept per building thread, bounded as the other scratch
    /// buffers are (`transpose::Scratch`).
    pub fn recycle(&self, out: Vec<u8>) {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.outputs.is_empty() {
                transpose::give(&mut scratch.outputs, out);
            }
        });
    }
}

thread_local! {
    /// The building thread's reusable buffers (the flusher's, in the service).
    static SCRATCH: std::cell::RefCell<transpose::Scratch> = Default::default();
}

#[cfg(test)]
pub(crate) mod tests;
