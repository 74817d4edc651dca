//! Cutting RowBinary rows into cells: where each column's value of each row starts, found
//! once by walking the rows with the columns' types. Nothing is copied here; sorting reads
//! the cells and the Native writer copies them column by column.

use super::{BlockError, Schema};

/// The rows of a batch cut into cells, borrowing the batch's bytes.
pub struct Cells<'a> {
    data: &'a [u8],
    columns: usize,
    /// `starts[row * columns + column]` is where that cell starts; one more entry holds the
    /// end of the data, so each cell ends where the next one starts.
    starts: Vec<usize>,
}

impl<'a> Cells<'a> {
    /// Cuts `count` rows of `data` (RowBinary, `schema`'s columns in order). Fails if the
    /// bytes are not exactly that many rows of those types.
    pub fn split(schema: &Schema, data: &'a [u8], count: usize) -> Result<Self, BlockError> {
        let columns = schema.columns.len();
        let mut starts = Vec::with_capacity(count * columns + 1);
        let mut at = 0;
        for row in 0..count {
            for column in &schema.columns {
                starts.push(at);
                let len = column
                    .ty
                    .value_len(&data[at..])
                    .ok_or(BlockError::Malformed { row })?;
                at += len;
            }
        }
        if at != data.len() {
            return Err(BlockError::Malformed { row: count });
        }
        starts.push(at);
        Ok(Self {
            data,
            columns,
            starts,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        (self.starts.len() - 1)
            .checked_div(self.columns)
            .unwrap_or(0)
    }

    /// Row `row`'s RowBinary bytes, all columns.
    pub fn row(&self, row: usize) -> &'a [u8] {
        &self.data[self.starts[row * self.columns]..self.starts[(row + 1) * self.columns]]
    }

    /// Row `row`'s value of column `column`, as RowBinary bytes.
    pub fn cell(&self, row: usize, column: usize) -> &'a [u8] {
        let i = row * self.columns + column;
        &self.data[self.starts[i]..self.starts[i + 1]]
    }
}
