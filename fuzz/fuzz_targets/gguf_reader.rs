//! Any byte string handed to the GGUF reader must give a file or an error,
//! never a panic, an out-of-bounds read or an unbounded allocation; a file
//! that parses must also survive the model config and tokenizer readers
//! and yield in-bounds tensor views.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quarrel_gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else {
        return;
    };
    for info in file.tensors() {
        let view = file.view(info);
        assert_eq!(view.data.len() as u64, info.size);
    }
    let _ = quarrel_model::ModelConfig::from_metadata(file.metadata());
    let _ = quarrel_tokenizer::Tokenizer::from_gguf(file.metadata());
});
