//! Incremental detokenization for streaming output.

use std::ops::Deref;

use crate::Tokenizer;

/// Turns generated tokens into text as it becomes complete.
///
/// A token's piece may end inside a UTF-8 character (byte-fallback and
/// byte-level tokens split emoji and CJK characters); those bytes are held
/// until the character completes. Pieces are concatenated as llama.cpp's
/// streaming output does, without [`Tokenizer::decode`]'s clean-ups.
/// `T` is `&Tokenizer`, or an owning pointer for decoders that live apart
/// from the tokenizer (the server's sequences).
pub struct StreamDecoder<T: Deref<Target = Tokenizer>> {
    tokenizer: T,
    pending: Vec<u8>,
}

impl<T: Deref<Target = Tokenizer>> StreamDecoder<T> {
    pub fn new(tokenizer: T) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds a token and returns the text it completes (possibly empty).
    /// Bytes that can never form a character become U+FFFD at once.
    pub fn push(&mut self, id: u32) -> String {
        self.pending
            .extend_from_slice(self.tokenizer.token_to_piece(id));
        let mut out = String::new();
        let mut done = 0;
        loop {
            match std::str::from_utf8(&self.pending[done..]) {
                Ok(s) => {
                    out.push_str(s);
                    done = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = done + e.valid_up_to();
                    // Valid by construction, so this is lossless.
                    out.push_str(&String::from_utf8_lossy(&self.pending[done..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            done = valid + bad;
                        }
                        // An incomplete character at the end: wait for more.
                        None => {
                            done = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..done);
        out
    }

    /// Returns what is still held (an unfinished character, as U+FFFD) and
    /// empties the decoder.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}
