//! GGUF reader: any bytes parse to an error or to a header whose every tensor lies
//! inside the input; typed metadata access never panics.
#![no_main]

use engine_formats::gguf::Gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else {
        return;
    };
    assert!(g.alignment.is_power_of_two());
    for t in &g.tensors {
        let bytes = g
            .tensor_bytes(data, t)
            .expect("a parsed tensor lies inside the file");
        assert_eq!(bytes.len() as u64, t.num_bytes());
        assert_eq!(t.range.start % g.alignment, g.data_offset % g.alignment);
        assert!(std::ptr::eq(g.tensor(&t.name).expect("indexed"), t));
        let _ = t.shape();
    }
    for key in g.metadata.0.keys() {
        let _ = (
            g.metadata.str(key),
            g.metadata.uint(key),
            g.metadata.float(key),
        );
        let _ = (
            g.metadata.bool(key),
            g.metadata.array(key).map(|a| a.map(|a| a.to_f32s())),
        );
    }
});
