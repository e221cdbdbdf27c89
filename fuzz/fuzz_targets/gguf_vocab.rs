//! GGUF tokenizer builder: a GGUF file's `tokenizer.ggml.*` metadata either is rejected
//! or builds a tokenizer that encodes and decodes text without panicking, with every id
//! below its `num_ids` (the token count).
#![no_main]

use engine_formats::gguf::Gguf;
use engine_formats::vocab::vocab_from_gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else {
        return;
    };
    let Ok(v) = vocab_from_gguf(&g.metadata) else {
        return;
    };
    let n = v.num_ids as u32;
    for text in [
        "Hello world! 123 héllo\n\tx",
        "<|im_start|>user\nhi<|im_end|>",
        "",
    ] {
        for special in [false, true] {
            if let Ok(enc) = v.tokenizer.encode(text, special) {
                assert!(
                    enc.get_ids().iter().all(|&id| id < n),
                    "{:?} >= {n}",
                    enc.get_ids()
                );
                let _ = v.tokenizer.decode(enc.get_ids(), !special);
            }
        }
    }
    let _ = v.tokenizer.decode(&[0, 1, 2, n, u32::MAX], false);
});
