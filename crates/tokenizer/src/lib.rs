//! Tokenizers built from GGUF metadata alone, token for token identical to
//! llama.cpp (the version vendored by llama-cpp-python 0.3.36), and chat
//! templates.
//!
//! Two vocabulary kinds are supported: `gpt2` (byte-level BPE behind one of
//! llama.cpp's pre-tokenizers) and `llama` (SentencePiece with byte fallback).
//! [`Vocab`] holds the file's tokenizer data as plain values; [`Tokenizer`]
//! adds llama.cpp's defaults and heuristics on top and encodes/decodes.

mod bpe;
pub mod chat;
mod cxx_sort;
mod merge;
mod pretokenize;
mod spm;
mod stream;
mod unicode;
mod unicode_tables;
mod vocab;

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

pub use stream::StreamDecoder;
pub use vocab::{token_type, SpecialIds, Vocab, VocabKind};

use bpe::Merges;
use pretokenize::PreConfig;
use vocab::{attr, Specials};

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata has no `{0}`")]
    MissingKey(&'static str),
    #[error("GGUF metadata key `{0}` has the wrong type or length")]
    BadKey(&'static str),
    #[error("tokenizer model `{0}` is not supported (supported: `gpt2`, `llama`)")]
    UnsupportedModel(String),
    #[error("unknown pre-tokenizer `{0}` (tokenizer.ggml.pre)")]
    UnknownPre(String),
    #[error("pre-tokenizer `{0}` (tokenizer.ggml.pre) is known to llama.cpp but not supported")]
    UnsupportedPre(String),
    #[error("token {id} duplicates the text of an earlier token: {text:?}")]
    DuplicateToken { id: u32, text: String },
}

/// The algorithm-specific part of a tokenizer.
enum Model {
    Spm,
    Bpe { merges: Merges, pre: PreConfig },
}

/// A tokenizer that reproduces llama.cpp's `llama_tokenize` and
/// `llama_token_to_piece` / `llama_detokenize`.
pub struct Tokenizer {
    model: Model,
    tokens: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u16>,
    ids: HashMap<String, u32>,
    /// Special tokens in the order llama.cpp looks for them in text: longest
    /// first.
    special_tokens: Vec<u32>,
    /// All pieces (`token_to_piece(special = true)`) back to back; token `i`
    /// is `pieces[piece_ends[i]..piece_ends[i + 1]]`.
    pieces: Vec<u8>,
    piece_ends: Vec<usize>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

/// A stretch of the input: raw text still to tokenize, or a special token
/// already found in it.
enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(meta: &quarrel_gguf::Metadata) -> Result<Self, TokenizerError> {
        Self::from_vocab(Vocab::from_gguf(meta)?)
    }

    /// Builds the tokenizer from plain vocabulary data.
    pub fn from_vocab(mut vocab: Vocab) -> Result<Self, TokenizerError> {
        vocab.name_empty_tokens();
        let specials = Specials::resolve(&vocab)?;

        let mut ids = HashMap::with_capacity(vocab.tokens.len());
        for (id, text) in vocab.tokens.iter().enumerate() {
            if ids.insert(text.clone(), id as u32).is_some() {
                return Err(TokenizerError::DuplicateToken {
                    id: id as u32,
                    text: text.clone(),
                });
            }
        }

        let mut special_tokens: Vec<u32> = (0..vocab.tokens.len() as u32)
            .filter(|&id| {
                specials.attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN)
                    != 0
            })
            .collect();
        // Longest first, ties in the order libstdc++'s unstable sort leaves
        // them, as in llama.cpp (see `cxx_sort`).
        let len = |id: &u32| vocab.tokens[*id as usize].len();
        cxx_sort::sort(&mut special_tokens, |a, b| len(a) > len(b));

        let mut pieces = Vec::new();
        let mut piece_ends = vec![0];
        for (id, text) in vocab.tokens.iter().enumerate() {
            pieces.extend(specials.piece(vocab.kind, text, id as u32));
            piece_ends.push(pieces.len());
        }

        // Strip rules come last in llama.cpp: they do not affect pieces or
        // which tokens are special.
        let mut attrs = specials.attrs;
        vocab::apply_strip_rules(&vocab, &mut attrs, &special_tokens);

        // Only BPE vocabularies have a pre-tokenizer.
        let model = match specials.pre {
            Some(pre) => Model::Bpe {
                merges: Merges::new(&vocab.merges),
                pre,
            },
            None => Model::Spm,
        };
        let n = vocab.tokens.len();
        let mut scores = vocab.scores;
        scores.resize(n, 0.0);
        Ok(Tokenizer {
            model,
            tokens: vocab.tokens,
            scores,
            attrs,
            ids,
            special_tokens,
            pieces,
            piece_ends,
            bos: specials.bos,
            eos: specials.eos,
            unk: specials.unk,
            eog: specials.eog,
            add_bos: specials.add_bos,
            add_eos: specials.add_eos,
            add_space_prefix: specials.add_space_prefix,
            clean_spaces: specials.clean_spaces,
        })
    }

    /// Tokenizes `text` as llama.cpp's `llama_tokenize(text, add_special =
    /// add_bos, parse_special)`.
    ///
    /// With `add_bos`, the model's BOS is prepended if the model asks for it
    /// (`add_bos_token`, or llama.cpp's default for the vocabulary), and its
    /// EOS appended in the rare case of `add_eos_token`. With `parse_special`,
    /// control tokens written in the text (`<|im_start|>`) become their ids;
    /// user-defined tokens are always matched, as in llama.cpp.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos && self.add_bos {
            out.extend(self.bos);
        }
        // SentencePiece models with add_space_prefix put a space before text
        // that starts the input or follows a special token.
        let mut after_special = true;
        for fragment in fragments {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(range) => {
                    let piece = &text[range];
                    match &self.model {
                        Model::Spm => {
                            let mut s = String::with_capacity(piece.len() + 3);
                            if self.add_space_prefix && after_special {
                                s.push(' ');
                            }
                            s.push_str(piece);
                            self.encode_spm(&s.replace(' ', "\u{2581}"), &mut out);
                        }
                        Model::Bpe { merges, pre } => self.encode_bpe(merges, pre, piece, &mut out),
                    }
                    after_special = false;
                }
            }
        }
        if add_bos && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Splits out the special tokens that occur in `text`
    /// (`tokenizer_st_partition`): longest tokens first, each split at every
    /// non-overlapping occurrence, left to right.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        // Cheap exact pre-check: a token containing a byte pair that the
        // text lacks cannot occur in it. This skips most of a large special
        // set (Gemma has thousands of `<unusedN>` tokens) without a search.
        let mut pairs = vec![0u64; 1 << 10];
        let mut bytes_seen = [false; 256];
        for w in text.as_bytes().windows(2) {
            let pair = usize::from(w[0]) << 8 | usize::from(w[1]);
            pairs[pair >> 6] |= 1 << (pair & 63);
        }
        for b in text.bytes() {
            bytes_seen[usize::from(b)] = true;
        }
        let may_occur = |needle: &str| {
            let n = needle.as_bytes();
            n.iter().all(|&b| bytes_seen[usize::from(b)])
                && n.windows(2).all(|w| {
                    let pair = usize::from(w[0]) << 8 | usize::from(w[1]);
                    pairs[pair >> 6] & (1 << (pair & 63)) != 0
                })
        };
        let mut fragments = vec![Fragment::Text(0..text.len())];
        for &id in &self.special_tokens {
            let a = self.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            if !may_occur(needle) {
                continue;
            }
            let found = fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(r) if text[r.clone()].contains(needle)));
            if !found {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                match fragment {
                    Fragment::Text(r) => split_at_token(text, r, needle, id, a, &mut next),
                    token => next.push(token),
                }
            }
            fragments = next;
        }
        fragments
    }

    fn encode_spm(&self, text: &str, out: &mut Vec<u32>) {
        let token = |s: &str| self.ids.get(s).copied();
        let score = |id: u32| self.scores[id as usize];
        for range in spm::merge(text, token, score) {
            match self.ids.get(&text[range.clone()]) {
                Some(&id) => out.push(id),
                None => {
                    for &b in text[range].as_bytes() {
                        out.extend(self.byte_token(b));
                    }
                }
            }
        }
    }

    /// The token for a raw byte in SentencePiece byte fallback: `<0xXX>`, or
    /// a one-byte token. llama.cpp aborts when neither exists; we fall back to
    /// the unknown token, or drop the byte when there is none.
    fn byte_token(&self, b: u8) -> Option<u32> {
        self.ids
            .get(&format!("<0x{b:02X}>"))
            .or_else(|| {
                let s = [b];
                std::str::from_utf8(&s).ok().and_then(|s| self.ids.get(s))
            })
            .copied()
            .or(self.unk)
    }

    fn encode_bpe(&self, merges: &Merges, pre: &PreConfig, text: &str, out: &mut Vec<u32>) {
        for word in pre.split(text) {
            if pre.ignore_merges {
                if let Some(&id) = self.ids.get(&word) {
                    out.push(id);
                    continue;
                }
            }
            for range in merges.apply(&word) {
                let symbol = &word[range];
                match self.ids.get(symbol) {
                    Some(&id) => out.push(id),
                    // Not a token (a merge produced text the vocabulary lacks):
                    // llama.cpp looks each byte of the encoded symbol up as a
                    // one-byte token, which only exists for ASCII.
                    None => {
                        for c in symbol.chars().filter(char::is_ascii) {
                            out.extend(self.ids.get(c.encode_utf8(&mut [0; 4]) as &str));
                        }
                    }
                }
            }
        }
    }

    /// The bytes of a token as llama.cpp's `token_to_piece(special = true)`
    /// gives them (control tokens as their text). Empty for ids outside the
    /// vocabulary.
    pub fn token_to_piece(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.piece_ends.get(i), self.piece_ends.get(i + 1)) {
            (Some(&start), Some(&end)) => &self.pieces[start..end],
            _ => &[],
        }
    }

    /// Detokenizes as llama.cpp's `llama_detokenize(remove_special = false,
    /// unparse_special = true)`: pieces back to back, the first piece's
    /// leading space dropped for `add_space_prefix` vocabularies, and, where
    /// the pre-tokenizer asks for it, tokenization spaces cleaned up
    /// (" ," -> ","). Bytes that are not UTF-8 become U+FFFD, decided on the
    /// whole text rather than per token.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let mut piece = self.token_to_piece(id);
            if i == 0 && self.add_space_prefix {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
            }
            bytes.extend_from_slice(piece);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether generating `id` ends the generation: EOS, EOT, EOM, and the
    /// tokens llama.cpp recognises by text (`<|im_end|>`, `<end_of_turn>`,
    /// `<|eot_id|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Whether `encode(.., add_bos = true, ..)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The token's text as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of the token whose text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp uses for strip rules.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Splits `text[range]` at each occurrence of special token `needle`.
fn split_at_token(
    text: &str,
    range: Range<usize>,
    needle: &str,
    id: u32,
    a: u16,
    out: &mut Vec<Fragment>,
) {
    let bytes = text.as_bytes();
    let mut start = range.start;
    while start < range.end {
        let Some(offset) = text[start..range.end].find(needle) else {
            break;
        };
        let at = start + offset;
        let mut left_end = at;
        if a & attr::LSTRIP != 0 {
            while left_end > start && is_c_space(bytes[left_end - 1]) {
                left_end -= 1;
            }
        }
        if left_end > start {
            out.push(Fragment::Text(start..left_end));
        }
        out.push(Fragment::Token(id));
        start = at + needle.len();
        if a & attr::RSTRIP != 0 {
            while start < range.end && is_c_space(bytes[start]) {
                start += 1;
            }
        }
    }
    if start < range.end {
        out.push(Fragment::Text(start..range.end));
    }
}

/// llama.cpp's `clean_up_tokenization_spaces`, three passes over the bytes:
/// drop the space before `?!.,`; turn " ' " into "'"; drop the space before
/// `'s`, `'m`, `'re`, `'ve`. Ported index for index, including its in-place
/// quirks.
fn clean_up_spaces(t: &mut Vec<u8>) {
    // Pass 1.
    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);

    // Pass 2: the space after the apostrophe is zeroed and skipped.
    let n = t.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = t[i];
        if x == b'\'' && i + 1 < n && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0;
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    t.truncate(total);

    // Pass 3.
    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = t[i + 1];
            let drop = match x1 {
                b's' | b'm' => true,
                b't' | b'd' => false,
                _ => i + 2 < n && matches!((x1, t[i + 2]), (b'r', b'e') | (b'v', b'e')),
            };
            if drop {
                total -= 1;
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        clean_up_spaces(&mut b);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn cleans_tokenization_spaces() {
        assert_eq!(clean("Hi , there !"), "Hi, there!");
        assert_eq!(clean("a ' b"), "a'b");
        assert_eq!(
            clean("it 's I 'm we 're they 've I 'll you 'd don 't"),
            "it's I'm we're they've I 'll you 'd don 't"
        );
        assert_eq!(clean(""), "");
        assert_eq!(clean(" ."), ".");
    }
}
