//! safetensors header reader: any bytes parse to an error or to tensors that tile the
//! data section exactly, each with a byte size matching its dtype and shape.
#![no_main]

use engine_formats::safetensors::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Header::parse(data) else {
        return;
    };
    let mut at = h.data_offset;
    for t in &h.tensors {
        assert_eq!(t.range.start, at);
        let elements: u64 = t.shape.iter().map(|&d| d as u64).product();
        assert_eq!(
            t.range.end - t.range.start,
            elements * t.dtype.size_in_bytes()
        );
        assert!(h.tensor(&t.name).is_some());
        at = t.range.end;
    }
    assert_eq!(at, data.len() as u64);
});
