//! The header of a `.safetensors` file, checked against the file.
//!
//! ```text
//!  n: u64 LE | n bytes of JSON {"__metadata__": {str: str}?,
//!                               NAME: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
//!  | data (offsets relative to here)
//! ```
//!
//! The header length must fit in the file and under [`SAFETENSORS_MAX_HEADER_BYTES`]; each
//! tensor's dtype must be known, its shape's byte size must not overflow and must equal
//! its offsets' span; and, as the safetensors crate requires, the tensors must tile the
//! data section exactly (no gaps, no overlaps, nothing past the end). Names are unique.

use crate::limits::{SAFETENSORS_MAX_DIMS, SAFETENSORS_MAX_HEADER_BYTES};
use crate::{FormatError, Result};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// Element types of safetensors (those with whole-byte elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    U16,
    I16,
    F16,
    BF16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl Dtype {
    /// The dtype of a header's `dtype` string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BOOL" => Self::Bool,
            "U8" => Self::U8,
            "I8" => Self::I8,
            "F8_E4M3" => Self::F8E4M3,
            "F8_E5M2" => Self::F8E5M2,
            "U16" => Self::U16,
            "I16" => Self::I16,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "U32" => Self::U32,
            "I32" => Self::I32,
            "F32" => Self::F32,
            "U64" => Self::U64,
            "I64" => Self::I64,
            "F64" => Self::F64,
            _ => return None,
        })
    }

    pub fn size_in_bytes(self) -> u64 {
        match self {
            Self::Bool | Self::U8 | Self::I8 | Self::F8E4M3 | Self::F8E5M2 => 1,
            Self::U16 | Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }
}

/// One tensor of the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub range: Range<u64>,
}

/// A checked header.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// Sorted by offset.
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
    /// Absolute offset of the data section (8 + header length).
    pub data_offset: u64,
    index: HashMap<String, usize>,
}

fn err(msg: String) -> FormatError {
    FormatError::Safetensors(msg)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

impl Header {
    /// Parse and check the header of `file` (the whole file's bytes).
    pub fn parse(file: &[u8]) -> Result<Self> {
        let file_len = file.len() as u64;
        let n = file
            .get(..8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .ok_or_else(|| err(format!("{file_len} bytes is too short for a header")))?;
        if n > SAFETENSORS_MAX_HEADER_BYTES {
            return Err(err(format!(
                "header length {n} is over the limit of {SAFETENSORS_MAX_HEADER_BYTES} bytes"
            )));
        }
        if n > file_len - 8 {
            return Err(err(format!(
                "header length {n} is past the end of the file ({file_len} bytes)"
            )));
        }
        let data_offset = 8 + n;
        let json = &file[8..data_offset as usize];
        let mut de = serde_json::Deserializer::from_slice(json);
        let entries = de
            .deserialize_map(EntriesVisitor)
            .and_then(|e| de.end().map(|_| e))
            .map_err(|e| err(format!("header JSON: {e}")))?;
        let mut header = Header {
            data_offset,
            ..Header::default()
        };
        for (name, value) in entries {
            if name == "__metadata__" {
                header.metadata = serde_json::from_value(value)
                    .map_err(|e| err(format!("`__metadata__` must map strings to strings: {e}")))?;
                continue;
            }
            let info = tensor_info(&name, value, data_offset)?;
            if header.index.contains_key(&name) {
                return Err(err(format!("tensor `{name}` appears twice")));
            }
            header.index.insert(name, 0);
            header.tensors.push(info);
        }
        header.check_tiling(file_len)?;
        Ok(header)
    }

    /// The tensor of this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Sort by offset, require the tensors to cover the data section exactly, and index.
    fn check_tiling(&mut self, file_len: u64) -> Result<()> {
        self.tensors.sort_by_key(|t| (t.range.start, t.range.end));
        let mut at = self.data_offset;
        for (i, t) in self.tensors.iter().enumerate() {
            if t.range.start != at {
                let what = if t.range.start < at {
                    "overlaps"
                } else {
                    "leaves a gap before"
                };
                return Err(err(format!(
                    "tensor `{}` {what} it: data_offsets start at {} but the previous tensor \
                     ends at {}",
                    t.name,
                    t.range.start - self.data_offset,
                    at - self.data_offset
                )));
            }
            at = t.range.end;
            self.index.insert(t.name.clone(), i);
        }
        if at != file_len {
            return Err(err(format!(
                "the tensors end at byte {at} but the file has {file_len} bytes (truncated or \
                 trailing data)"
            )));
        }
        Ok(())
    }
}

fn tensor_info(name: &str, value: serde_json::Value, data_offset: u64) -> Result<TensorInfo> {
    let bad = |m: String| err(format!("tensor `{name}`: {m}"));
    let e: Entry = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    let dtype =
        Dtype::parse(&e.dtype).ok_or_else(|| bad(format!("unknown dtype `{}`", e.dtype)))?;
    if e.shape.len() > SAFETENSORS_MAX_DIMS {
        return Err(bad(format!(
            "{} dimensions (at most {SAFETENSORS_MAX_DIMS})",
            e.shape.len()
        )));
    }
    let bytes = e
        .shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= i64::MAX as u64)
        .ok_or_else(|| bad(format!("shape {:?} overflows", e.shape)))?;
    let (begin, end) = e.data_offsets;
    if begin > end || end - begin != bytes {
        return Err(bad(format!(
            "{} with shape {:?} needs {bytes} bytes but data_offsets [{begin}, {end}] do not \
             span that",
            e.dtype, e.shape
        )));
    }
    let range = data_offset
        .checked_add(begin)
        .zip(data_offset.checked_add(end))
        .map(|(s, e)| s..e)
        .ok_or_else(|| bad(format!("data_offsets [{begin}, {end}] overflow")))?;
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape: e.shape.iter().map(|&d| d as usize).collect(),
        range,
    })
}

/// The header's top-level object as ordered pairs, so that duplicate names are seen.
struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(String, serde_json::Value)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of tensors")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(pair) = map.next_entry()? {
            out.push(pair);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str, data_len: usize) -> Vec<u8> {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(json.as_bytes());
        b.resize(b.len() + data_len, 0);
        b
    }

    fn parse_err(json: &str, data_len: usize) -> String {
        Header::parse(&file(json, data_len))
            .unwrap_err()
            .to_string()
    }

    const GOOD: &str = r#"{"__metadata__":{"format":"pt"},
        "b":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]},
        "a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}"#;

    #[test]
    fn reads_tensors_in_offset_order() {
        let h = Header::parse(&file(GOOD, 32)).unwrap();
        let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let b = h.tensor("b").unwrap();
        assert_eq!((b.dtype, b.shape.clone()), (Dtype::F32, vec![2, 3]));
        assert_eq!(b.range, h.data_offset + 8..h.data_offset + 32);
        assert_eq!(h.metadata.get("format").map(String::as_str), Some("pt"));
        let empty = Header::parse(&file("{}", 0)).unwrap();
        assert!(empty.tensors.is_empty());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = file(GOOD, 32);
        for n in 0..bytes.len() {
            assert!(Header::parse(&bytes[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn lengths_offsets_and_types_are_checked() {
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(Header::parse(&huge)
            .unwrap_err()
            .to_string()
            .contains("over the limit"));
        let mut past = 100u64.to_le_bytes().to_vec();
        past.extend_from_slice(b"{}");
        assert!(Header::parse(&past)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
        let t = |body: &str| format!(r#"{{"t":{body}}}"#);
        assert!(
            parse_err(&t(r#"{"dtype":"F33","shape":[1],"data_offsets":[0,4]}"#), 4)
                .contains("unknown dtype `F33`")
        );
        assert!(
            parse_err(&t(r#"{"dtype":"F32","shape":[2],"data_offsets":[0,4]}"#), 4)
                .contains("needs 8 bytes")
        );
        assert!(
            parse_err(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[4,0]}"#), 4)
                .contains("do not span")
        );
        assert!(parse_err(
            &t(r#"{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}"#),
            4
        )
        .contains("overflows"));
        assert!(parse_err(
            &t(r#"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#),
            4
        )
        .contains("tensor `t`"));
        assert!(
            parse_err(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#), 8)
                .contains("trailing data")
        );
        assert!(
            parse_err(&t(r#"{"dtype":"F32","shape":[1],"data_offsets":[4,8]}"#), 8).contains("gap")
        );
        let two = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                      "b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert!(parse_err(two, 8).contains("overlaps"));
        let dup = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},
                      "a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
        assert!(parse_err(dup, 2).contains("appears twice"));
        assert!(parse_err("[1,2]", 0).contains("header JSON"));
        assert!(parse_err(&"[".repeat(1000), 0).contains("header JSON"));
        assert!(parse_err(r#"{"__metadata__":{"a":1}}"#, 0).contains("__metadata__"));
    }
}
