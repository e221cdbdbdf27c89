//! A GGUF reader that trusts nothing the file says.
//!
//! ```text
//!  "GGUF" | version u32 | n_tensors u64 | n_kv u64
//!  n_kv x        key (u64 len + bytes) | type u32 | value (arrays: type u32, n u64, items)
//!  n_tensors x   name | n_dims u32 | dims u64 x n_dims | ggml type u32 | offset u64
//!  padding to `general.alignment` (default 32) | tensor data (offsets relative to here)
//! ```
//!
//! [`Gguf::parse`] reads the header from the whole file's bytes (a memory map or a read
//! file). Every count, length and dimension is checked against the bytes left and the
//! limits in [`crate::limits`] before anything is allocated; every tensor's type must be
//! known, its size must not overflow, its offset must be aligned and its bytes must lie
//! inside the file. The result holds the metadata and each tensor's absolute byte range,
//! so a caller can hand a tensor's raw bytes to a dequantizer or a quantized kernel.
//! Strings are read as llama.cpp and candle do: trailing NULs dropped, invalid UTF-8
//! replaced. Versions 2 and 3 (little-endian) are supported.

pub mod ggml;
pub mod value;
pub mod write;

pub use ggml::GgmlType;
pub use value::{Array, Metadata, Value};

use crate::limits::*;
use crate::{FormatError, Result};
use std::collections::HashMap;
use std::ops::Range;
use value::type_id as ty;

/// The file magic.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// One tensor: its name, type, dimensions and where its bytes are.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    /// Absolute byte range in the file, checked to lie inside it.
    pub range: Range<u64>,
}

impl TensorInfo {
    /// Row-major shape, outermost first (the reverse of `dims`), as candle and PyTorch use.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn num_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn num_bytes(&self) -> u64 {
        self.range.end - self.range.start
    }
}

/// A parsed GGUF header.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub metadata: Metadata,
    /// In file order.
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
    index: HashMap<String, usize>,
}

fn err(msg: String) -> FormatError {
    FormatError::Gguf(msg)
}

impl Gguf {
    /// Parse and check the header of `file` (the whole file's bytes).
    pub fn parse(file: &[u8]) -> Result<Self> {
        let mut c = Cursor { buf: file, pos: 0 };
        let version = header(&mut c)?;
        let n_tensors = c.u64("header", "tensor count")?;
        let n_kv = c.u64("header", "metadata count")?;
        c.check_count(
            n_kv,
            GGUF_MAX_KEYS,
            13,
            "header",
            "metadata key/value pairs",
        )?;
        c.check_count(n_tensors, GGUF_MAX_TENSORS, 24, "header", "tensors")?;
        let metadata = read_metadata(&mut c, n_kv)?;
        let alignment = match metadata.uint(ALIGNMENT_KEY)? {
            None => DEFAULT_ALIGNMENT,
            Some(a) if a.is_power_of_two() && a <= 1 << 30 => a,
            Some(a) => {
                return Err(err(format!(
                    "`{ALIGNMENT_KEY}` = {a} is not a power of two (at most 2^30)"
                )))
            }
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut index = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let (info, offset) = read_tensor_info(&mut c, i, alignment)?;
            if index.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(err(format!("tensor `{}` appears twice", info.name)));
            }
            tensors.push((info, offset));
        }
        let data_offset = (c.pos as u64)
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| err("data offset overflows".into()))?;
        let file_len = file.len() as u64;
        let tensors = tensors
            .into_iter()
            .map(|(mut info, offset)| {
                let start = data_offset.checked_add(offset);
                let end = start.and_then(|s| s.checked_add(info.range.end));
                match (start, end) {
                    (Some(start), Some(end)) if end <= file_len => {
                        info.range = start..end;
                        Ok(info)
                    }
                    _ => Err(err(format!(
                        "tensor `{}` ({} bytes at data offset {offset}) ends past the end of \
                         the file ({file_len} bytes): the file is truncated or corrupt",
                        info.name, info.range.end
                    ))),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            index,
        })
    }

    /// The tensor of this GGUF name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's raw bytes in `file` (the bytes this header was parsed from).
    pub fn tensor_bytes<'a>(&self, file: &'a [u8], info: &TensorInfo) -> Result<&'a [u8]> {
        usize::try_from(info.range.start)
            .ok()
            .zip(usize::try_from(info.range.end).ok())
            .and_then(|(s, e)| file.get(s..e))
            .ok_or_else(|| {
                err(format!(
                    "tensor `{}`: bytes {:?} are outside the {} bytes given",
                    info.name,
                    info.range,
                    file.len()
                ))
            })
    }
}

/// Magic and version.
fn header(c: &mut Cursor) -> Result<u32> {
    let magic = c.fixed::<4>("header", "magic")?;
    if &magic != MAGIC {
        return Err(err(format!(
            "no GGUF magic: the file starts with {:02x?}",
            magic
        )));
    }
    let version = c.u32("header", "version")?;
    match version {
        2 | 3 => Ok(version),
        1 => Err(err("GGUF version 1 is not supported (2 and 3 are)".into())),
        v if v.swap_bytes() <= 3 => Err(err("big-endian GGUF files are not supported".into())),
        v => Err(err(format!(
            "unknown GGUF version {v} (2 and 3 are supported)"
        ))),
    }
}

fn read_metadata(c: &mut Cursor, n_kv: u64) -> Result<Metadata> {
    let mut map = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(GGUF_MAX_KEY_BYTES, &format!("metadata pair #{i}"), "key")?;
        let ctx = format!("metadata `{key}`");
        let type_id = c.u32(&ctx, "value type")?;
        let value = read_value(c, type_id, 0, &ctx)?;
        if map.insert(key, value).is_some() {
            return Err(err(format!("{ctx} appears twice")));
        }
    }
    Ok(Metadata(map))
}

/// The smallest encoding of one value of `type_id` (for bounding counts).
fn min_size(type_id: u32) -> Option<u64> {
    Some(match type_id {
        ty::U8 | ty::I8 | ty::BOOL => 1,
        ty::U16 | ty::I16 => 2,
        ty::U32 | ty::I32 | ty::F32 => 4,
        ty::U64 | ty::I64 | ty::F64 | ty::STRING => 8,
        ty::ARRAY => 12,
        _ => return None,
    })
}

fn unknown_type(ctx: &str, type_id: u32) -> FormatError {
    err(format!("{ctx}: unknown value type {type_id}"))
}

fn read_value(c: &mut Cursor, type_id: u32, depth: usize, ctx: &str) -> Result<Value> {
    Ok(match type_id {
        ty::U8 => Value::U8(c.fixed::<1>(ctx, "u8")?[0]),
        ty::I8 => Value::I8(i8::from_le_bytes(c.fixed(ctx, "i8")?)),
        ty::U16 => Value::U16(u16::from_le_bytes(c.fixed(ctx, "u16")?)),
        ty::I16 => Value::I16(i16::from_le_bytes(c.fixed(ctx, "i16")?)),
        ty::U32 => Value::U32(c.u32(ctx, "u32")?),
        ty::I32 => Value::I32(i32::from_le_bytes(c.fixed(ctx, "i32")?)),
        ty::F32 => Value::F32(f32::from_le_bytes(c.fixed(ctx, "f32")?)),
        ty::BOOL => Value::Bool(c.fixed::<1>(ctx, "bool")?[0] != 0),
        ty::STRING => Value::String(c.string(GGUF_MAX_STRING_BYTES, ctx, "string")?),
        ty::U64 => Value::U64(c.u64(ctx, "u64")?),
        ty::I64 => Value::I64(i64::from_le_bytes(c.fixed(ctx, "i64")?)),
        ty::F64 => Value::F64(f64::from_le_bytes(c.fixed(ctx, "f64")?)),
        ty::ARRAY => Value::Array(read_array(c, depth + 1, ctx)?),
        other => return Err(unknown_type(ctx, other)),
    })
}

fn read_array(c: &mut Cursor, depth: usize, ctx: &str) -> Result<Array> {
    if depth > GGUF_MAX_ARRAY_DEPTH {
        return Err(err(format!(
            "{ctx}: arrays nested deeper than {GGUF_MAX_ARRAY_DEPTH} levels"
        )));
    }
    let elem = c.u32(ctx, "array element type")?;
    let n = c.u64(ctx, "array length")?;
    let min = min_size(elem).ok_or_else(|| unknown_type(ctx, elem))?;
    c.check_count(n, GGUF_MAX_ARRAY_LEN, min, ctx, "array elements")?;
    fn le<const N: usize, T>(
        c: &mut Cursor,
        n: u64,
        ctx: &str,
        f: fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        let bytes = c.take(n * N as u64, ctx, "array data")?;
        Ok(bytes
            .chunks_exact(N)
            .map(|b| {
                let mut a = [0u8; N];
                a.copy_from_slice(b);
                f(a)
            })
            .collect())
    }
    Ok(match elem {
        ty::U8 => Array::U8(le(c, n, ctx, |[b]| b)?),
        ty::I8 => Array::I8(le(c, n, ctx, i8::from_le_bytes)?),
        ty::BOOL => Array::Bool(le(c, n, ctx, |[b]| b != 0)?),
        ty::U16 => Array::U16(le(c, n, ctx, u16::from_le_bytes)?),
        ty::I16 => Array::I16(le(c, n, ctx, i16::from_le_bytes)?),
        ty::U32 => Array::U32(le(c, n, ctx, u32::from_le_bytes)?),
        ty::I32 => Array::I32(le(c, n, ctx, i32::from_le_bytes)?),
        ty::F32 => Array::F32(le(c, n, ctx, f32::from_le_bytes)?),
        ty::U64 => Array::U64(le(c, n, ctx, u64::from_le_bytes)?),
        ty::I64 => Array::I64(le(c, n, ctx, i64::from_le_bytes)?),
        ty::F64 => Array::F64(le(c, n, ctx, f64::from_le_bytes)?),
        ty::STRING => Array::String(
            (0..n)
                .map(|i| {
                    c.string(GGUF_MAX_STRING_BYTES, ctx, "string element")
                        .map_err(|e| match e {
                            FormatError::Gguf(m) => err(format!("{m} (element {i})")),
                            other => other,
                        })
                })
                .collect::<Result<_>>()?,
        ),
        ty::ARRAY => Array::Array(
            (0..n)
                .map(|_| read_array(c, depth + 1, ctx))
                .collect::<Result<_>>()?,
        ),
        other => return Err(unknown_type(ctx, other)),
    })
}

/// One tensor info; `range` holds `0..size` and the relative offset is returned beside.
fn read_tensor_info(c: &mut Cursor, i: u64, alignment: u64) -> Result<(TensorInfo, u64)> {
    let name = c.string(GGUF_MAX_NAME_BYTES, &format!("tensor #{i}"), "name")?;
    let ctx = format!("tensor `{name}`");
    let n_dims = c.u32(&ctx, "dimension count")?;
    if n_dims > GGUF_MAX_DIMS {
        return Err(err(format!(
            "{ctx}: {n_dims} dimensions (at most {GGUF_MAX_DIMS})"
        )));
    }
    let dims = (0..n_dims)
        .map(|_| c.u64(&ctx, "dimension"))
        .collect::<Result<Vec<u64>>>()?;
    let type_id = c.u32(&ctx, "type")?;
    let offset = c.u64(&ctx, "offset")?;
    let ggml_type = GgmlType::from_id(type_id)
        .ok_or_else(|| err(format!("{ctx}: unknown ggml type {type_id}")))?;
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| {
            acc.checked_mul(d).filter(|&n| n <= i64::MAX as u64)
        })
        .ok_or_else(|| err(format!("{ctx}: dimensions {dims:?} overflow")))?;
    let inner = dims.first().copied().unwrap_or(1);
    if !inner.is_multiple_of(ggml_type.block_size) {
        return Err(err(format!(
            "{ctx}: innermost dimension {inner} is not a multiple of the {} block size {}",
            ggml_type.name, ggml_type.block_size
        )));
    }
    let bytes = ggml_type
        .bytes_for(elements)
        .ok_or_else(|| err(format!("{ctx}: size of {elements} elements overflows")))?;
    if !offset.is_multiple_of(alignment) {
        return Err(err(format!(
            "{ctx}: offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    let info = TensorInfo {
        name,
        ggml_type,
        dims,
        range: 0..bytes,
    };
    Ok((info, offset))
}

/// A position in the file's bytes; every read is bounds-checked.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, ctx: &str, what: &str) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(err(format!(
                "{ctx}: {what} needs {n} bytes at offset {} but the file has {} left \
                 (truncated or corrupt)",
                self.pos,
                self.left()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self, ctx: &str, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, ctx, what)?);
        Ok(a)
    }

    fn u32(&mut self, ctx: &str, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.fixed(ctx, what)?))
    }

    fn u64(&mut self, ctx: &str, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.fixed(ctx, what)?))
    }

    /// `n` items of at least `min_bytes` each must fit in what is left, and `n <= max`.
    fn check_count(&self, n: u64, max: u64, min_bytes: u64, ctx: &str, what: &str) -> Result<()> {
        if n > max {
            return Err(err(format!("{ctx}: {n} {what} (at most {max})")));
        }
        if n.saturating_mul(min_bytes) > self.left() {
            return Err(err(format!(
                "{ctx}: {n} {what} cannot fit in the {} bytes left (truncated or corrupt)",
                self.left()
            )));
        }
        Ok(())
    }

    fn string(&mut self, max: u64, ctx: &str, what: &str) -> Result<String> {
        let len = self.u64(ctx, what)?;
        if len > max {
            return Err(err(format!(
                "{ctx}: {what} claims {len} bytes (at most {max})"
            )));
        }
        let mut bytes = self.take(len, ctx, what)?;
        while let [rest @ .., 0] = bytes {
            bytes = rest;
        }
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

#[cfg(test)]
mod tests;
