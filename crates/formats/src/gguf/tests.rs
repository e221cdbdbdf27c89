use super::write::{put_string, Writer};
use super::*;

fn sample() -> Writer {
    Writer::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("a.u8", Value::U8(7))
        .kv("a.i64", Value::I64(-5))
        .kv("a.f64", Value::F64(0.25))
        .kv("a.bool", Value::Bool(true))
        .kv(
            "a.tokens",
            Value::Array(Array::String(vec!["x".into(), "yz".into()])),
        )
        .kv("a.scores", Value::Array(Array::F32(vec![0.5, -1.0])))
        .kv(
            "a.nested",
            Value::Array(Array::Array(vec![
                Array::U16(vec![1, 2]),
                Array::I8(vec![-1]),
            ])),
        )
        .f32_tensor("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .tensor("q", 2, &[32, 2], vec![9u8; 36])
}

/// Header up to the metadata: magic, version 3, counts.
fn head(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

/// One tensor info.
fn info(b: &mut Vec<u8>, name: &str, dims: &[u64], type_id: u32, offset: u64) {
    put_string(b, name);
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    dims.iter()
        .for_each(|d| b.extend_from_slice(&d.to_le_bytes()));
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
}

fn parse_err(bytes: &[u8]) -> String {
    match Gguf::parse(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn round_trips_metadata_and_tensor_ranges() {
    let bytes = sample().to_bytes();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!((g.version, g.alignment, g.tensors.len()), (3, 32, 2));
    assert_eq!(g.metadata.str("general.architecture"), Ok(Some("llama")));
    assert_eq!(g.metadata.uint("a.u8"), Ok(Some(7)));
    assert_eq!(g.metadata.get("a.i64"), Some(&Value::I64(-5)));
    assert_eq!(g.metadata.bool("a.bool"), Ok(Some(true)));
    let tokens = g.metadata.array("a.tokens").unwrap().unwrap();
    assert_eq!(tokens.as_strings().unwrap(), ["x", "yz"]);
    assert!(
        matches!(g.metadata.get("a.nested"), Some(Value::Array(Array::Array(v))) if v.len() == 2)
    );
    let w = g.tensor("w").unwrap();
    assert_eq!((w.dims.clone(), w.shape()), (vec![3, 2], vec![2, 3]));
    assert_eq!(w.range.start % 32, 0);
    let raw = g.tensor_bytes(&bytes, w).unwrap();
    assert_eq!(&raw[4..8], &2f32.to_le_bytes());
    let q = g.tensor("q").unwrap();
    assert_eq!((q.ggml_type.name, q.num_bytes()), ("q4_0", 36));
    assert_eq!(g.tensor_bytes(&bytes, q).unwrap(), &[9u8; 36][..]);
    assert!(g.tensor_bytes(&bytes[..10], q).is_err());
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = sample().to_bytes();
    for n in 0..bytes.len() {
        assert!(
            Gguf::parse(&bytes[..n]).is_err(),
            "prefix of {n} bytes parsed"
        );
    }
}

#[test]
fn bad_magic_version_and_endianness() {
    assert!(parse_err(b"GGML\x03\0\0\0").contains("no GGUF magic"));
    let mut v1 = head(0, 0);
    v1[4] = 1;
    assert!(parse_err(&v1).contains("version 1"));
    let mut be = head(0, 0);
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(parse_err(&be).contains("big-endian"));
    let mut v9 = head(0, 0);
    v9[4] = 9;
    assert!(parse_err(&v9).contains("unknown GGUF version 9"));
}

#[test]
fn counts_and_lengths_are_checked_before_allocating() {
    assert!(parse_err(&head(u64::MAX, 0)).contains("tensors (at most"));
    assert!(parse_err(&head(1000, 0)).contains("cannot fit"));
    assert!(parse_err(&head(0, u64::MAX)).contains("metadata key/value pairs"));
    // A key claiming 2^64-1 bytes.
    let mut b = head(0, 1);
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.resize(64, 0);
    assert!(parse_err(&b).contains("key claims 18446744073709551615 bytes"));
    // A string value longer than the file.
    let mut b = head(0, 1);
    put_string(&mut b, "k");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&1000u64.to_le_bytes());
    b.resize(64, 0);
    let e = parse_err(&b);
    assert!(
        e.contains("metadata `k`") && e.contains("needs 1000 bytes"),
        "{e}"
    );
    // An array of a billion strings in a few bytes.
    let mut b = head(0, 1);
    put_string(&mut b, "arr");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&1_000_000_000u64.to_le_bytes());
    assert!(parse_err(&b).contains("(at most 16777216)"));
    let mut b = head(0, 1);
    put_string(&mut b, "arr");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&1_000_000u64.to_le_bytes());
    assert!(parse_err(&b).contains("cannot fit"));
}

#[test]
fn value_types_nesting_and_duplicates() {
    let mut b = head(0, 1);
    put_string(&mut b, "k");
    b.extend_from_slice(&13u32.to_le_bytes());
    assert!(parse_err(&b).contains("unknown value type 13"));
    let mut deep = head(0, 1);
    put_string(&mut deep, "deep");
    deep.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..10 {
        deep.extend_from_slice(&9u32.to_le_bytes());
        deep.extend_from_slice(&1u64.to_le_bytes());
    }
    deep.extend_from_slice(&[0; 64]);
    assert!(parse_err(&deep).contains("nested deeper"));
    let dup = Writer::new()
        .kv("k", Value::U8(1))
        .kv("k", Value::U8(2))
        .to_bytes();
    assert!(parse_err(&dup).contains("`k` appears twice"));
    let dup = Writer::new()
        .f32_tensor("t", &[1], &[0.0])
        .f32_tensor("t", &[1], &[0.0])
        .to_bytes();
    assert!(parse_err(&dup).contains("tensor `t` appears twice"));
}

#[test]
fn alignment_must_be_a_power_of_two() {
    for a in [0u32, 3, 48] {
        let b = Writer::new().kv(ALIGNMENT_KEY, Value::U32(a)).to_bytes();
        assert!(parse_err(&b).contains("not a power of two"), "{a}");
    }
    let b = Writer::new()
        .kv(ALIGNMENT_KEY, Value::U32(64))
        .f32_tensor("t", &[3], &[1.0, 2.0, 3.0])
        .f32_tensor("u", &[1], &[4.0])
        .to_bytes();
    let g = Gguf::parse(&b).unwrap();
    assert_eq!(g.alignment, 64);
    assert!(g.tensors.iter().all(|t| t.range.start % 64 == 0));
    let b = Writer::new().kv(ALIGNMENT_KEY, Value::I32(-8)).to_bytes();
    assert!(parse_err(&b).contains("negative"));
}

#[test]
fn tensor_infos_are_checked() {
    let with = |name: &str, dims: &[u64], type_id: u32, offset: u64| {
        let mut b = head(1, 0);
        info(&mut b, name, dims, type_id, offset);
        b.resize(b.len() + 4096, 0);
        parse_err(&b)
    };
    assert!(with("t", &[1, 1, 1, 1, 1], 0, 0).contains("5 dimensions"));
    assert!(with("t", &[4], 77, 0).contains("unknown ggml type 77"));
    assert!(with("t", &[u64::MAX, 2], 0, 0).contains("overflow"));
    assert!(with("t", &[1 << 40, 1 << 40], 0, 0).contains("overflow"));
    assert!(with("t", &[33], 2, 0).contains("not a multiple of the q4_0 block size 32"));
    assert!(with("t", &[4], 0, 5).contains("not a multiple of the alignment"));
    assert!(with("t", &[4], 0, u64::MAX - 31).contains("ends past the end"));
    assert!(with("t", &[1 << 20], 0, 0).contains("ends past the end"));
    assert!(with(&"n".repeat(65), &[4], 0, 0).contains("name claims 65 bytes"));
}

#[test]
fn strings_drop_trailing_nuls_and_replace_bad_utf8() {
    let mut b = head(0, 1);
    put_string(&mut b, "k");
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(b"a\xff\0\0");
    let g = Gguf::parse(&b).unwrap();
    assert_eq!(g.metadata.str("k"), Ok(Some("a\u{fffd}")));
}
