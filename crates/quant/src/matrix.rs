//! [`QMatrix`]: a weight matrix `[rows, cols]` kept in its GGML type, in the CPU
//! kernels' packed layout ([`crate::pack`]), with conversions from and to GGUF bytes.
//!
//! Rows are the output features (`out_features` of a linear layer, GGUF's second
//! dimension), columns the reduction dimension. The last tile of 8 rows is padded with
//! zero rows. Float types (f32, f16, bf16) are kept as plain rows.

use crate::block::{decode, encode, Unpacked};
use crate::dequant::{dequantize_into, values};
use crate::error::{input_err, Result};
use crate::matmul::CpuContext;
use crate::pack::{pack, packed_bytes, unpack, TILE};
use crate::quantize::quantize;
use crate::types::GgmlType;

/// Bytes aligned to 64 (a cache line), without `unsafe`: a Vec with slack, and the
/// offset of the first aligned byte. The Vec never grows, so the offset stays valid.
#[derive(Clone)]
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn zeroed(len: usize) -> Aligned {
        let buf = vec![0u8; len + 64];
        let start = (64 - buf.as_ptr() as usize % 64) % 64;
        Aligned { buf, start, len }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// A quantized (or float) weight matrix on the CPU.
#[derive(Clone)]
pub struct QMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: Aligned,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({} [{}, {}])", self.ty, self.rows, self.cols)
    }
}

impl QMatrix {
    /// From a GGUF tensor's bytes: `rows` rows of `cols` values of `ty`, row-major.
    pub fn from_ggml(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<QMatrix> {
        QMatrix::from_ggml_on(ty, rows, cols, bytes, None)
    }

    /// [`QMatrix::from_ggml`], packing on `cpu`'s threads when given.
    pub fn from_ggml_on(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        cpu: Option<&CpuContext>,
    ) -> Result<QMatrix> {
        ty.check_row_len(cols)?;
        let row_bytes = ty.bytes_for(cols);
        if rows == 0 || bytes.len() != rows * row_bytes {
            input_err!(
                "{ty} matrix [{rows}, {cols}] needs {} bytes, got {}",
                rows * row_bytes,
                bytes.len()
            );
        }
        if !ty.is_quantized() {
            let mut data = Aligned::zeroed(bytes.len());
            data.bytes_mut().copy_from_slice(bytes);
            return Ok(QMatrix {
                ty,
                rows,
                cols,
                data,
            });
        }
        let (nb, pb, bb) = (cols / ty.block_elems(), packed_bytes(ty), ty.block_bytes());
        let tiles = rows.div_ceil(TILE);
        let mut data = Aligned::zeroed(tiles * nb * pb);
        // [tiles][nb] packed blocks; one tile per piece.
        let pack_tile = |tile: usize, out: &mut [u8]| {
            for b in 0..nb {
                let u: [Unpacked; TILE] = std::array::from_fn(|r| {
                    let row = tile * TILE + r;
                    match row < rows {
                        true => decode(ty, &bytes[row * row_bytes + b * bb..][..bb]),
                        false => Unpacked::default(),
                    }
                });
                pack(ty, &u, &mut out[b * pb..][..pb]);
            }
        };
        match cpu {
            Some(cpu) => cpu
                .pool()
                .for_each_chunk(data.bytes_mut(), nb * pb, &pack_tile),
            None => {
                for (tile, out) in data.bytes_mut().chunks_mut(nb * pb).enumerate() {
                    pack_tile(tile, out);
                }
            }
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Quantize f32 values `[rows, cols]` (row-major) to `ty`.
    pub fn quantize(ty: GgmlType, rows: usize, cols: usize, x: &[f32]) -> Result<QMatrix> {
        QMatrix::quantize_on(ty, rows, cols, x, None)
    }

    /// [`QMatrix::quantize`] on `cpu`'s threads when given (quantizing a large model's
    /// K-quants is seconds of work per matrix on one core).
    pub fn quantize_on(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        x: &[f32],
        cpu: Option<&CpuContext>,
    ) -> Result<QMatrix> {
        ty.check_row_len(cols)?;
        if x.len() != rows * cols {
            input_err!(
                "{ty} matrix [{rows}, {cols}]: {} values given, {} expected",
                x.len(),
                rows * cols
            );
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            input_err!(
                "{ty} matrix [{rows}, {cols}]: value {i} is {} (not finite)",
                x[i]
            );
        }
        let (row_bytes, chunk_rows) = (ty.bytes_for(cols), 16);
        let mut bytes = vec![0u8; rows * row_bytes];
        // Cannot fail: whole rows of finite values.
        let quantize_rows = |i: usize, out: &mut [u8]| {
            let n = out.len() / row_bytes * cols;
            if let Ok(q) = quantize(ty, &x[i * chunk_rows * cols..][..n]) {
                out.copy_from_slice(&q);
            }
        };
        match cpu {
            Some(cpu) => {
                cpu.pool()
                    .for_each_chunk(&mut bytes, chunk_rows * row_bytes, &quantize_rows)
            }
            None => quantize_rows(0, &mut bytes[..]),
        }
        QMatrix::from_ggml_on(ty, rows, cols, &bytes, cpu)
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held in memory (the packed layout, padding rows included).
    pub fn size_bytes(&self) -> usize {
        self.data.len
    }

    /// Bytes the same matrix takes in a GGUF file.
    pub fn ggml_bytes(&self) -> usize {
        self.rows * self.ty.bytes_for(self.cols)
    }

    pub(crate) fn packed(&self) -> &[u8] {
        self.data.bytes()
    }

    /// The decoded blocks of row `row` (quantized types).
    fn row_blocks(&self, row: usize) -> impl Iterator<Item = Unpacked> + '_ {
        let (nb, pb) = (self.cols / self.ty.block_elems(), packed_bytes(self.ty));
        let (tile, r) = (row / TILE, row % TILE);
        (0..nb).map(move |b| {
            let mut tile_rows = unpack(self.ty, &self.packed()[(tile * nb + b) * pb..][..pb]);
            std::mem::take(&mut tile_rows[r])
        })
    }

    /// The GGUF bytes of the matrix (the inverse of [`QMatrix::from_ggml`]).
    pub fn to_ggml(&self) -> Vec<u8> {
        if !self.ty.is_quantized() {
            return self.packed().to_vec();
        }
        let mut out = Vec::with_capacity(self.ggml_bytes());
        for row in 0..self.rows {
            for u in self.row_blocks(row) {
                encode(self.ty, &u, &mut out);
            }
        }
        out
    }

    /// Row `row` as f32 (an embedding lookup), into `out` (`cols` values).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        if row >= self.rows || out.len() != self.cols {
            input_err!("{self:?}: cannot read row {row} into {} values", out.len());
        }
        if !self.ty.is_quantized() {
            let rb = self.ty.bytes_for(self.cols);
            dequantize_into(self.ty, &self.packed()[row * rb..][..rb], out);
            return Ok(());
        }
        let be = self.ty.block_elems();
        for (u, y) in self.row_blocks(row).zip(out.chunks_exact_mut(be)) {
            values(self.ty, &u, y);
        }
        Ok(())
    }

    /// All values, `[rows, cols]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (row, y) in out.chunks_exact_mut(self.cols).enumerate() {
            // Cannot fail: row < rows and y holds cols values.
            let _ = self.dequantize_row(row, y);
        }
        out
    }

    /// A matrix of the given rows, in order (e.g. to undo llama.cpp's q/k permutation
    /// without dequantizing).
    pub fn select_rows(&self, rows: &[usize]) -> Result<QMatrix> {
        let picked = select_rows_ggml(self.ty, self.rows, self.cols, &self.to_ggml(), rows)?;
        QMatrix::from_ggml(self.ty, rows.len(), self.cols, &picked)
    }
}

/// The GGUF bytes of rows `pick` (in that order) of a `[rows, cols]` matrix of `ty`.
pub fn select_rows_ggml(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: &[u8],
    pick: &[usize],
) -> Result<Vec<u8>> {
    let rb = ty.bytes_for(cols);
    if bytes.len() != rows * rb {
        input_err!(
            "{ty} [{rows}, {cols}]: {} bytes, expected {}",
            bytes.len(),
            rows * rb
        );
    }
    if let Some(&bad) = pick.iter().find(|&&r| r >= rows) {
        input_err!("{ty} [{rows}, {cols}]: no row {bad}");
    }
    Ok(pick
        .iter()
        .flat_map(|&r| bytes[r * rb..(r + 1) * rb].iter().copied())
        .collect())
}
