//! GGUF metadata values and typed access to them.
//!
//! Arrays keep their element type (`Vec<u8>`, `Vec<String>`, ...) rather than a
//! `Vec<Value>`, so a million-element array costs what its elements cost, not 32 bytes
//! each. Accessors convert between integer widths only when the value fits.

use crate::{FormatError, Result};
use std::collections::HashMap;

/// GGUF value type ids (`gguf_type`).
pub mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// A metadata array, stored by element type.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
}

/// The GGUF name of a value type id, for error messages.
pub fn type_name(id: u32) -> &'static str {
    const NAMES: [&str; 13] = [
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64",
        "f64",
    ];
    NAMES.get(id as usize).copied().unwrap_or("unknown")
}

impl Value {
    /// The value's GGUF type id.
    pub fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => type_id::U8,
            Self::I8(_) => type_id::I8,
            Self::U16(_) => type_id::U16,
            Self::I16(_) => type_id::I16,
            Self::U32(_) => type_id::U32,
            Self::I32(_) => type_id::I32,
            Self::U64(_) => type_id::U64,
            Self::I64(_) => type_id::I64,
            Self::F32(_) => type_id::F32,
            Self::F64(_) => type_id::F64,
            Self::Bool(_) => type_id::BOOL,
            Self::String(_) => type_id::STRING,
            Self::Array(_) => type_id::ARRAY,
        }
    }

    /// The GGUF type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        type_name(self.type_id())
    }

    /// An integer of any width, as i128 (so every GGUF integer fits).
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(x) => x.into(),
            Self::I8(x) => x.into(),
            Self::U16(x) => x.into(),
            Self::I16(x) => x.into(),
            Self::U32(x) => x.into(),
            Self::I32(x) => x.into(),
            Self::U64(x) => x.into(),
            Self::I64(x) => x.into(),
            _ => return None,
        })
    }

    /// A float, or an integer read as one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(x) => Some(x.into()),
            Self::F64(x) => Some(x),
            _ => self.as_int().map(|i| i as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' GGUF type id.
    pub fn elem_type_id(&self) -> u32 {
        match self {
            Self::U8(_) => type_id::U8,
            Self::I8(_) => type_id::I8,
            Self::U16(_) => type_id::U16,
            Self::I16(_) => type_id::I16,
            Self::U32(_) => type_id::U32,
            Self::I32(_) => type_id::I32,
            Self::U64(_) => type_id::U64,
            Self::I64(_) => type_id::I64,
            Self::F32(_) => type_id::F32,
            Self::F64(_) => type_id::F64,
            Self::Bool(_) => type_id::BOOL,
            Self::String(_) => type_id::STRING,
            Self::Array(_) => type_id::ARRAY,
        }
    }

    /// The element type name, for error messages.
    pub fn elem_name(&self) -> &'static str {
        type_name(self.elem_type_id())
    }

    /// Integer elements as i64, `None` unless every element is an integer that fits.
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        fn all<T: Copy>(v: &[T], f: impl Fn(T) -> Option<i64>) -> Option<Vec<i64>> {
            v.iter().map(|&x| f(x)).collect()
        }
        match self {
            Self::U8(v) => all(v, |x| Some(x.into())),
            Self::I8(v) => all(v, |x| Some(x.into())),
            Self::U16(v) => all(v, |x| Some(x.into())),
            Self::I16(v) => all(v, |x| Some(x.into())),
            Self::U32(v) => all(v, |x| Some(x.into())),
            Self::I32(v) => all(v, |x| Some(x.into())),
            Self::U64(v) => all(v, |x| i64::try_from(x).ok()),
            Self::I64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Numeric elements as f32 (integers converted), `None` for other element types.
    pub fn to_f32s(&self) -> Option<Vec<f32>> {
        match self {
            Self::F32(v) => Some(v.clone()),
            Self::F64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            _ => Some(self.to_i64s()?.into_iter().map(|x| x as f32).collect()),
        }
    }

    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Self::String(v) => Some(v),
            _ => None,
        }
    }
}

/// The metadata key/value pairs of a GGUF file (keys are unique).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata(pub HashMap<String, Value>);

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn bad(key: &str, v: &Value, want: &str) -> FormatError {
        FormatError::Metadata {
            key: key.to_string(),
            reason: format!("expected {want}, found {}", describe(v)),
        }
    }

    /// A string value; `Ok(None)` when absent.
    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| Self::bad(key, v, "a string")))
            .transpose()
    }

    /// A non-negative integer that fits in a u64; `Ok(None)` when absent.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let i = v.as_int().ok_or_else(|| Self::bad(key, v, "an integer"))?;
        u64::try_from(i)
            .map(Some)
            .map_err(|_| FormatError::Metadata {
                key: key.to_string(),
                reason: format!("{i} is negative"),
            })
    }

    /// A number (float or integer); `Ok(None)` when absent.
    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| Self::bad(key, v, "a number")))
            .transpose()
    }

    /// A bool, or an integer read as `!= 0`; `Ok(None)` when absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => v
                .as_int()
                .map(|i| Some(i != 0))
                .ok_or_else(|| Self::bad(key, v, "a bool")),
        }
    }

    /// An array; `Ok(None)` when absent.
    pub fn array(&self, key: &str) -> Result<Option<&Array>> {
        self.get(key)
            .map(|v| v.as_array().ok_or_else(|| Self::bad(key, v, "an array")))
            .transpose()
    }
}

/// `a u32 (7)`, `a string of 12 bytes`, `an array of 5 string`: for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("a string of {} bytes", s.len()),
        Value::Array(a) => format!("an array of {} {}", a.len(), a.elem_name()),
        other => match other.as_f64() {
            Some(x) => format!("a {} ({x})", other.type_name()),
            None => format!("a {}", other.type_name()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_access_checks_types_and_ranges() {
        let md = Metadata(
            [
                ("s", Value::String("x".into())),
                ("n", Value::I32(-3)),
                ("u", Value::U8(7)),
                ("f", Value::F32(0.5)),
                ("b", Value::U32(1)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        );
        assert_eq!(md.str("s"), Ok(Some("x")));
        assert_eq!(md.str("missing"), Ok(None));
        let e = md.str("u").unwrap_err().to_string();
        assert!(e.contains("`u`") && e.contains("a u8 (7)"), "{e}");
        assert!(md
            .uint("n")
            .unwrap_err()
            .to_string()
            .contains("-3 is negative"));
        assert_eq!(md.uint("u"), Ok(Some(7)));
        assert_eq!(md.float("f"), Ok(Some(0.5)));
        assert_eq!(md.float("u"), Ok(Some(7.0)));
        assert_eq!(md.bool("b"), Ok(Some(true)));
        assert!(md.array("s").is_err());
    }

    #[test]
    fn arrays_convert_only_when_values_fit() {
        assert_eq!(Array::U64(vec![u64::MAX]).to_i64s(), None);
        assert_eq!(Array::I8(vec![-1, 2]).to_i64s(), Some(vec![-1, 2]));
        assert_eq!(Array::String(vec![]).to_f32s(), None);
        assert_eq!(Array::U16(vec![3]).to_f32s(), Some(vec![3.0]));
    }
}
