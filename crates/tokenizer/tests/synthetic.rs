//! Behaviour on small hand-built vocabularies (no model files needed): the
//! defaults and rules llama.cpp applies that the real models do not reach.

use quarrel_tokenizer::{token_type, SpecialIds, Tokenizer, TokenizerError, Vocab, VocabKind};

fn vocab(kind: VocabKind, pre: &str, tokens: &[(&str, i32)]) -> Vocab {
    Vocab {
        kind,
        pre: pre.to_string(),
        tokens: tokens.iter().map(|(t, _)| t.to_string()).collect(),
        scores: Vec::new(),
        token_types: tokens.iter().map(|&(_, ty)| ty).collect(),
        merges: Vec::new(),
        special: SpecialIds::default(),
        add_bos: None,
        add_eos: None,
        add_space_prefix: None,
        model_name: String::new(),
        architecture: String::new(),
    }
}

/// A byte-level vocabulary: the 256 byte characters, then `extra`.
fn bpe(pre: &str, extra: &[(&str, i32)], merges: &[&str]) -> Vocab {
    let bytes: Vec<String> = (0..=255u8)
        .map(|b| {
            let mut c = b as char;
            // GPT-2's table: non-printable bytes move to U+0100 and up.
            let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
            if !printable {
                let rank = (0..b)
                    .filter(|&x| !matches!(x, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF))
                    .count();
                c = char::from_u32(256 + rank as u32).unwrap();
            }
            c.to_string()
        })
        .collect();
    let mut all: Vec<(&str, i32)> = bytes
        .iter()
        .map(|s| (s.as_str(), token_type::NORMAL))
        .collect();
    all.extend_from_slice(extra);
    let mut v = vocab(VocabKind::Bpe, pre, &all);
    v.merges = merges.iter().map(|m| m.to_string()).collect();
    v
}

#[test]
fn unknown_pre_tokenizer_is_named() {
    let err = Tokenizer::from_vocab(bpe("no-such-pre", &[], &[]))
        .err()
        .unwrap();
    assert!(matches!(&err, TokenizerError::UnknownPre(p) if p == "no-such-pre"));
    assert!(err.to_string().contains("no-such-pre"), "{err}");
    let err = Tokenizer::from_vocab(bpe("tekken", &[], &[]))
        .err()
        .unwrap();
    assert!(matches!(err, TokenizerError::UnsupportedPre(_)));
    // No pre-tokenizer at all means "default", as in llama.cpp.
    assert!(Tokenizer::from_vocab(bpe("", &[], &[])).is_ok());
}

#[test]
fn bpe_merges_and_bos_defaults() {
    let extra = [
        ("Ġh", 1),
        ("Ġhi", 1),
        ("<|begin_of_text|>", token_type::CONTROL),
    ];
    let v = bpe("llama-bpe", &extra, &["Ġ h", "Ġh i"]);
    let bos = 258;
    let mut v = v;
    v.special.bos = Some(bos);
    let tok = Tokenizer::from_vocab(v.clone()).unwrap();
    // Llama 3 vocabularies add BOS unless the file says otherwise.
    assert!(tok.adds_bos());
    assert_eq!(tok.encode(" hi", true, false), [bos, 257]);
    assert_eq!(tok.decode(&[bos, 257]), "<|begin_of_text|> hi");
    v.add_bos = Some(false);
    let tok = Tokenizer::from_vocab(v).unwrap();
    assert_eq!(tok.encode(" hi", true, false), [257]);

    // gpt2-style (qwen2) vocabularies do not add BOS by default.
    let tok = Tokenizer::from_vocab(bpe("qwen2", &extra, &["Ġ h"])).unwrap();
    assert!(!tok.adds_bos());
    assert_eq!(tok.encode(" hi", true, false), [256, b'i' as u32]);
}

#[test]
fn eog_tokens_are_found_by_text() {
    let extra = [
        ("<|im_end|>", token_type::NORMAL),
        ("<|im_start|>", token_type::CONTROL),
    ];
    let mut v = bpe("qwen2", &extra, &[]);
    v.special.eos = Some(256);
    let tok = Tokenizer::from_vocab(v).unwrap();
    assert!(tok.is_eog(256));
    assert!(!tok.is_eog(257));
    // Forced to a control token, so it is parsed only with parse_special.
    assert_eq!(tok.encode("<|im_end|>", false, true), [256]);
    assert_ne!(tok.encode("<|im_end|>", false, false), [256]);
}

#[test]
fn duplicate_tokens_are_rejected() {
    let v = vocab(VocabKind::Spm, "", &[("a", 1), ("a", 1)]);
    assert!(matches!(
        Tokenizer::from_vocab(v),
        Err(TokenizerError::DuplicateToken { id: 1, .. })
    ));
}

fn spm() -> Vocab {
    let mut tokens: Vec<(String, i32)> = vec![
        ("<unk>".into(), token_type::UNKNOWN),
        ("<s>".into(), token_type::CONTROL),
        ("</s>".into(), token_type::CONTROL),
    ];
    for b in 0..=255u8 {
        tokens.push((format!("<0x{b:02X}>"), token_type::BYTE));
    }
    for t in ["▁", "h", "i", "▁h", "▁hi", "hi", "é"] {
        tokens.push((t.into(), token_type::NORMAL));
    }
    let refs: Vec<(&str, i32)> = tokens.iter().map(|(t, ty)| (t.as_str(), *ty)).collect();
    let mut v = vocab(VocabKind::Spm, "", &refs);
    v.scores = (0..v.tokens.len()).map(|i| -(i as f32)).collect();
    v
}

#[test]
fn sentencepiece_space_prefix_and_byte_fallback() {
    let v = spm();
    let id = |t: &str| v.tokens.iter().position(|x| x == t).unwrap() as u32;
    let (hi, sp_hi, e_acute) = (id("hi"), id("▁hi"), id("é"));
    let tok = Tokenizer::from_vocab(v.clone()).unwrap();
    // SentencePiece defaults: BOS 1 added, a space before the text.
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    assert_eq!(tok.encode("hi", true, false), [1, sp_hi]);
    // After a special token the prefix space comes back.
    assert_eq!(tok.encode("hi</s>hi", false, true), [sp_hi, 2, sp_hi]);
    // "ü" is not a token: its two UTF-8 bytes become byte tokens.
    assert_eq!(tok.encode("ü", false, false), [id("▁"), 3 + 0xC3, 3 + 0xBC]);
    assert_eq!(tok.encode("é", false, false), [id("▁"), e_acute]);
    // decode drops the prefix space again.
    assert_eq!(tok.decode(&tok.encode("hi ü", false, false)), "hi ü");

    let mut v = spm();
    v.add_space_prefix = Some(false);
    let tok = Tokenizer::from_vocab(v).unwrap();
    assert_eq!(tok.encode("hi", false, false), [hi]);
}

#[test]
fn phi3_special_tokens_swallow_following_whitespace() {
    // llama.cpp gives every special token of a model named Phi-3 the
    // right-strip attribute (except <s>, <unk>, <|endoftext|>).
    let mut v = spm();
    v.tokens.push("<|user|>".into());
    v.token_types.push(token_type::USER_DEFINED);
    v.tokens.push("<|endoftext|>".into());
    v.token_types.push(token_type::CONTROL);
    v.scores.resize(v.tokens.len(), 0.0);
    let user = v.tokens.len() as u32 - 2;
    let plain = Tokenizer::from_vocab(v.clone()).unwrap();
    v.model_name = "Phi-3 Mini".into();
    let phi3 = Tokenizer::from_vocab(v).unwrap();
    let sp_hi = phi3.token_id("▁hi").unwrap();
    let sp = phi3.token_id("▁").unwrap();
    assert_eq!(phi3.encode("<|user|> \n hi", false, true), [user, sp_hi]);
    assert_eq!(plain.encode("<|user|> hi", false, true), [user, sp, sp_hi]);
}
