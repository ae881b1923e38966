//! The vocabulary as a GGUF file describes it, and the special-token rules
//! llama.cpp derives from it (default ids, end-of-generation set, token
//! attributes).

use std::collections::BTreeSet;

use quarrel_gguf::{Metadata, Value};

use crate::pretokenize::{PreConfig, PreError};
use crate::unicode::char_to_byte;
use crate::TokenizerError;

/// The tokenization algorithm (`tokenizer.ggml.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// `llama`: SentencePiece, merging by score, with byte fallback.
    Spm,
    /// `gpt2`: byte-level BPE, merging by rank, after a pre-tokenizer split.
    Bpe,
}

/// Token types as GGUF stores them in `tokenizer.ggml.token_type`.
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Special token ids as the file states them; `None` where it says nothing
/// (llama.cpp's defaults then apply).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// Everything a tokenizer is built from, as plain data.
#[derive(Clone, Debug)]
pub struct Vocab {
    pub kind: VocabKind,
    /// `tokenizer.ggml.pre` (empty when absent); selects the BPE splitter.
    pub pre: String,
    pub tokens: Vec<String>,
    /// One per token, or empty (all zero). SentencePiece merges by these.
    pub scores: Vec<f32>,
    /// One per token (see [`token_type`]), or empty (all normal).
    pub token_types: Vec<i32>,
    /// BPE merges, `"left right"`, highest priority first.
    pub merges: Vec<String>,
    pub special: SpecialIds,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// `general.name` and `general.architecture`: llama.cpp keys a few
    /// per-model token rules on them.
    pub model_name: String,
    pub architecture: String,
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

impl Vocab {
    /// Reads the `tokenizer.ggml.*` keys.
    pub fn from_gguf(meta: &Metadata) -> Result<Vocab, TokenizerError> {
        let model = meta
            .get_str(KEY_MODEL)
            .ok_or(TokenizerError::MissingKey(KEY_MODEL))?;
        let kind = match model {
            "llama" => VocabKind::Spm,
            "gpt2" => VocabKind::Bpe,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let tokens =
            string_array(meta, KEY_TOKENS)?.ok_or(TokenizerError::MissingKey(KEY_TOKENS))?;
        let n = tokens.len();

        let scores = match meta.get(KEY_SCORES) {
            None => Vec::new(),
            Some(v) => {
                let items = v.as_array().ok_or(TokenizerError::BadKey(KEY_SCORES))?;
                let scores: Vec<f32> = items
                    .iter()
                    .map(|x| match x {
                        Value::F32(f) => Some(*f),
                        Value::I32(i) => Some(*i as f32),
                        _ => None,
                    })
                    .collect::<Option<_>>()
                    .ok_or(TokenizerError::BadKey(KEY_SCORES))?;
                if scores.len() < n {
                    return Err(TokenizerError::BadKey(KEY_SCORES));
                }
                scores
            }
        };
        let token_types = match meta.get(KEY_TYPES) {
            None => Vec::new(),
            Some(v) => {
                let items = v.as_array().ok_or(TokenizerError::BadKey(KEY_TYPES))?;
                let types: Vec<i32> = items
                    .iter()
                    .map(Value::as_i32)
                    .collect::<Option<_>>()
                    .ok_or(TokenizerError::BadKey(KEY_TYPES))?;
                if types.len() < n {
                    return Err(TokenizerError::BadKey(KEY_TYPES));
                }
                types
            }
        };
        let merges = match kind {
            VocabKind::Bpe => {
                string_array(meta, KEY_MERGES)?.ok_or(TokenizerError::MissingKey(KEY_MERGES))?
            }
            VocabKind::Spm => Vec::new(),
        };

        // Ids outside the vocabulary are ignored, as llama.cpp does; the
        // deprecated prefix/suffix/middle keys win over the fim_* ones.
        let id = |keys: &[&str]| -> Option<u32> {
            keys.iter()
                .rev()
                .filter_map(|k| meta.get_u32(&format!("tokenizer.ggml.{k}")))
                .find(|&id| (id as usize) < n)
        };
        let special = SpecialIds {
            bos: id(&["bos_token_id"]),
            eos: id(&["eos_token_id"]),
            eot: id(&["eot_token_id"]),
            eom: id(&["eom_token_id"]),
            unk: id(&["unknown_token_id"]),
            fim_pre: id(&["fim_pre_token_id", "prefix_token_id"]),
            fim_suf: id(&["fim_suf_token_id", "suffix_token_id"]),
            fim_mid: id(&["fim_mid_token_id", "middle_token_id"]),
            fim_pad: id(&["fim_pad_token_id"]),
            fim_rep: id(&["fim_rep_token_id"]),
            fim_sep: id(&["fim_sep_token_id"]),
        };

        Ok(Vocab {
            kind,
            pre: meta.get_str("tokenizer.ggml.pre").unwrap_or("").to_string(),
            tokens,
            scores,
            token_types,
            merges,
            special,
            add_bos: meta.get_bool("tokenizer.ggml.add_bos_token"),
            add_eos: meta.get_bool("tokenizer.ggml.add_eos_token"),
            add_space_prefix: meta.get_bool("tokenizer.ggml.add_space_prefix"),
            model_name: meta.get_str("general.name").unwrap_or("").to_string(),
            architecture: meta
                .get_str("general.architecture")
                .unwrap_or("")
                .to_string(),
        })
    }

    /// llama.cpp cannot hold empty tokens (it could never match them), so it
    /// renames them; we do the same so that ids and texts agree with it.
    pub(crate) fn name_empty_tokens(&mut self) {
        for (i, t) in self.tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
        }
    }
}

fn string_array(meta: &Metadata, key: &'static str) -> Result<Option<Vec<String>>, TokenizerError> {
    let Some(v) = meta.get(key) else {
        return Ok(None);
    };
    let items = v.as_array().ok_or(TokenizerError::BadKey(key))?;
    items
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .map(Some)
        .ok_or(TokenizerError::BadKey(key))
}

/// Token attributes (llama.cpp's `llama_token_attr`), as bit flags.
pub(crate) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

fn attr_of_type(t: i32) -> u16 {
    match t {
        token_type::NORMAL => attr::NORMAL,
        token_type::UNKNOWN => attr::UNKNOWN,
        token_type::CONTROL => attr::CONTROL,
        token_type::USER_DEFINED => attr::USER_DEFINED,
        token_type::UNUSED => attr::UNUSED,
        token_type::BYTE => attr::BYTE,
        // UNDEFINED and anything unknown: no attribute at all.
        _ => 0,
    }
}

// Texts llama.cpp recognises as special tokens when the file does not name
// them (convert scripts often do not).
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// gpt-oss channel markers, which llama.cpp always renders as text.
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// The special-token facts llama.cpp derives from a vocabulary.
#[derive(Clone, Debug)]
pub(crate) struct Specials {
    /// Per token, [`attr`] flags (before the per-model strip rules).
    pub attrs: Vec<u16>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    /// End-of-generation ids.
    pub eog: BTreeSet<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
    /// The BPE pre-tokenizer; `None` for SentencePiece.
    pub pre: Option<PreConfig>,
}

impl Specials {
    /// Applies llama.cpp's defaults and heuristics, in its order, to `v`.
    pub(crate) fn resolve(v: &Vocab) -> Result<Specials, TokenizerError> {
        let n = v.tokens.len();
        let in_range = |id: u32| ((id as usize) < n).then_some(id);

        let (pre, mut bos, mut eos, mut unk, mut add_bos, add_space_prefix, clean_spaces) =
            match v.kind {
                VocabKind::Spm => (None, Some(1), Some(2), Some(0), true, true, false),
                VocabKind::Bpe => {
                    let pre = PreConfig::for_name(&v.pre).map_err(|e| match e {
                        PreError::Unsupported => TokenizerError::UnsupportedPre(v.pre.clone()),
                        PreError::Unknown => TokenizerError::UnknownPre(v.pre.clone()),
                    })?;
                    let bos = if pre.no_default_bos { None } else { Some(11) };
                    (
                        Some(pre),
                        bos,
                        Some(11),
                        None,
                        pre.add_bos,
                        false,
                        pre.clean_spaces,
                    )
                }
            };
        let add_space_prefix = v.add_space_prefix.unwrap_or(add_space_prefix);
        bos = bos.and_then(in_range);
        eos = eos.and_then(in_range);
        unk = unk.and_then(in_range);
        let s = &v.special;
        let file = |id: Option<u32>| id.and_then(in_range);
        bos = file(s.bos).or(bos);
        eos = file(s.eos).or(eos);
        unk = file(s.unk).or(unk);
        // Slots filled by text when the file names no id, in llama.cpp's order.
        let mut found = [
            (file(s.eot), EOT_TEXTS),
            (file(s.eom), EOM_TEXTS),
            (file(s.fim_pre), FIM_PRE_TEXTS),
            (file(s.fim_suf), FIM_SUF_TEXTS),
            (file(s.fim_mid), FIM_MID_TEXTS),
            (file(s.fim_pad), FIM_PAD_TEXTS),
            (file(s.fim_rep), FIM_REP_TEXTS),
            (file(s.fim_sep), FIM_SEP_TEXTS),
        ];
        add_bos = v.add_bos.unwrap_or(add_bos);
        let add_eos = v.add_eos.unwrap_or(false);

        let mut attrs: Vec<u16> = (0..n)
            .map(|i| {
                v.token_types
                    .get(i)
                    .map_or(attr::NORMAL, |&t| attr_of_type(t))
            })
            .collect();

        // Find unnamed EOT/EOM/FIM tokens by their text; whatever is found is
        // forced to be a control token. llama.cpp walks a hash map here, so
        // when several texts match, which one wins is unspecified there; we
        // take the lowest id.
        for (id, text) in v.tokens.iter().enumerate() {
            for (slot, texts) in found.iter_mut() {
                if slot.is_none() && texts.contains(&text.as_str()) {
                    *slot = Some(id as u32);
                    attrs[id] |= attr::CONTROL;
                }
            }
        }
        let [eot, eom, _, _, _, fim_pad, fim_rep, fim_sep] = found.map(|(slot, _)| slot);

        // (llama.cpp also marks control tokens named "unused..." as unused;
        // for a control token that changes neither matching nor its piece.)

        let mut eog: BTreeSet<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for (id, text) in v.tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&text.as_str()) {
                eog.insert(id as u32);
                attrs[id] |= attr::CONTROL;
            }
        }
        for (id, text) in v.tokens.iter().enumerate() {
            if ALWAYS_RENDERED.contains(&text.as_str()) {
                attrs[id] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());

        let find = |eog: &BTreeSet<u32>, want: &[&str]| {
            eog.iter()
                .copied()
                .find(|&id| want.contains(&v.tokens[id as usize].as_str()))
        };
        // o200k_harmony and solar-open: "<|end|>" ends a message, not the
        // generation, when the vocabulary has these call/return markers.
        if let Some(end) = find(&eog, &["<|end|>"]) {
            let call = find(&eog, &["<|call|>", "<|calls|>"]).is_some();
            let ret_or_flush = find(&eog, &["<|return|>", "<|flush|>"]).is_some();
            if call && ret_or_flush {
                eog.remove(&end);
                attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        // gemma4 and plamo: "</s>" is an ordinary token there.
        if let Some(s) = find(&eog, &["</s>"]) {
            if find(&eog, &["<|tool_response>", "<|plamo:eos|>"]).is_some() {
                eog.remove(&s);
                attrs[s as usize] = attr::NORMAL;
            }
        }

        Ok(Specials {
            attrs,
            bos,
            eos,
            unk,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            pre,
        })
    }

    /// The text llama.cpp's `token_to_piece(special = true)` gives for a token.
    pub(crate) fn piece(&self, kind: VocabKind, text: &str, id: u32) -> Vec<u8> {
        let a = self.attrs.get(id as usize).copied().unwrap_or(0);
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            text.as_bytes().to_vec()
        } else if a & attr::NORMAL != 0 {
            match kind {
                VocabKind::Spm => text.replace('\u{2581}', " ").into_bytes(),
                VocabKind::Bpe => byte_level_decode(text),
            }
        } else if a & attr::BYTE != 0 {
            vec![byte_token_value(text)]
        } else {
            Vec::new()
        }
    }
}

/// The byte a `<0xXX>` token stands for: llama.cpp reads up to two hex digits
/// after the third character, stopping at the first non-digit.
fn byte_token_value(text: &str) -> u8 {
    text.bytes()
        .skip(3)
        .take(2)
        .map_while(|b| (b as char).to_digit(16))
        .fold(0u8, |acc, d| acc.wrapping_mul(16).wrapping_add(d as u8))
}

/// Maps a byte-level BPE token back to its bytes. Characters outside the byte
/// table become llama.cpp's `[UNK_BYTE_0x..]` marker (which, as in llama.cpp,
/// repeats the whole token text).
fn byte_level_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp's per-model strip attributes, which GGUF files do not carry.
pub(crate) fn apply_strip_rules(v: &Vocab, attrs: &mut [u16], special_tokens: &[u32]) {
    let set = |attrs: &mut [u16], text: &str, flag: u16, on: bool| {
        if let Some(id) = v.tokens.iter().position(|t| t == text) {
            if on {
                attrs[id] |= flag;
            } else {
                attrs[id] &= !flag;
            }
        }
    };
    let name = v.model_name.to_ascii_lowercase();
    let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
    if any(&v.pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
        || any(&v.architecture, &["nomic-bert-moe", "jina-bert-v3"])
    {
        set(attrs, "<mask>", attr::LSTRIP, true);
    } else if any(&name, &["phi-3", "phi3"]) {
        for &id in special_tokens {
            attrs[id as usize] |= attr::RSTRIP;
        }
        set(attrs, "</s>", attr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set(attrs, t, attr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set(attrs, "[MASK]", attr::LSTRIP, true);
    }
}
