//! The real models against llama.cpp's own outputs (tests/data/*.json, made
//! with the llama.cpp vendored by llama-cpp-python 0.3.36).
//!
//! The GGUF files are not in the repository: `scripts/fetch-models.sh` puts
//! them in `$QUARREL_MODELS` (default `~/.cache/quarrel/models`). A missing
//! file fails these tests; it never skips them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use quarrel_gguf::GgufFile;
use quarrel_tokenizer::chat::{ChatTemplate, Message};
use quarrel_tokenizer::{StreamDecoder, Tokenizer};
use serde::Deserialize;

const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const SMOL: &str = "smollm2-135m-instruct-q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

#[derive(Deserialize)]
struct Reference {
    model: String,
    tokenize: Vec<TokenizeCase>,
    chat: Vec<ChatCase>,
    greedy: Vec<GreedyCase>,
}

/// A prompt llama.cpp tokenized (BOS added if the model adds it) and the
/// tokens it generated, with their text.
#[derive(Deserialize)]
struct GreedyCase {
    prompt: String,
    prompt_tokens: Vec<u32>,
    tokens: Vec<u32>,
    text: String,
    stop_type: String,
}

#[derive(Deserialize)]
struct TokenizeCase {
    text: String,
    ids: Vec<u32>,
    ids_with_special: Vec<u32>,
}

#[derive(Deserialize)]
struct ChatCase {
    messages: Vec<ChatMessage>,
    rendered: String,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: String,
}

fn reference(name: &str) -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUARREL_MODELS") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("neither QUARREL_MODELS, XDG_CACHE_HOME nor HOME is set");
    cache.join("quarrel/models")
}

/// The model's metadata and tokenizer, loaded once per test binary.
struct Loaded {
    file: GgufFile,
    tokenizer: Tokenizer,
}

fn load(file: &str) -> &'static Loaded {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static Loaded>>> = OnceLock::new();
    // A test that failed to load leaves no entry, so a poisoned lock is safe
    // to reuse (and the next test reports the same clear message).
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache.entry(file.to_string()).or_insert_with(|| {
        let path = model_dir().join(file);
        assert!(
            path.is_file(),
            "model file {} is missing: run scripts/fetch-models.sh (CI fetches the models first)",
            path.display()
        );
        let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tokenizer = Tokenizer::from_gguf(gguf.metadata())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Box::leak(Box::new(Loaded {
            file: gguf,
            tokenizer,
        }))
    })
}

fn check_tokenize(name: &str, file: &str) {
    let reference = reference(name);
    assert_eq!(reference.model, file);
    let tok = &load(file).tokenizer;
    let mut failures = Vec::new();
    for case in &reference.tokenize {
        let ids = tok.encode(&case.text, false, true);
        if ids != case.ids {
            failures.push(format!(
                "{:?} (no BOS):\n  llama.cpp {:?}\n  quarrel   {:?}",
                case.text, case.ids, ids
            ));
        }
        let ids = tok.encode(&case.text, true, true);
        if ids != case.ids_with_special {
            failures.push(format!(
                "{:?} (add BOS):\n  llama.cpp {:?}\n  quarrel   {:?}",
                case.text, case.ids_with_special, ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{file}: {} mismatches\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The prompts of the generation references tokenize the same, and the
/// generated tokens detokenize (whole and streamed) to llama.cpp's text.
fn check_greedy(name: &str, file: &str) {
    let tok = &load(file).tokenizer;
    for case in reference(name).greedy {
        assert_eq!(
            tok.encode(&case.prompt, true, true),
            case.prompt_tokens,
            "{file}: {:?}",
            case.prompt
        );
        let mut generated = case.tokens.as_slice();
        if case.stop_type == "eos" {
            // The end-of-generation token is not part of the text.
            let (&last, rest) = generated.split_last().unwrap();
            assert!(tok.is_eog(last), "{file}: {last}");
            generated = rest;
        }
        assert_eq!(tok.decode(generated), case.text, "{file}");
        let mut stream = StreamDecoder::new(tok);
        let mut streamed: String = generated.iter().map(|&id| stream.push(id)).collect();
        streamed += &stream.finish();
        assert_eq!(streamed, case.text, "{file}");
    }
}

#[test]
fn qwen_prompts_and_generations_match_llama_cpp() {
    check_greedy("qwen05", QWEN);
}

#[test]
fn smollm_prompts_and_generations_match_llama_cpp() {
    check_greedy("smol", SMOL);
}

#[test]
fn gemma_prompts_and_generations_match_llama_cpp() {
    check_greedy("gemma", GEMMA);
}

#[test]
fn qwen_tokenizes_like_llama_cpp() {
    check_tokenize("qwen05", QWEN);
}

#[test]
fn smollm_tokenizes_like_llama_cpp() {
    check_tokenize("smol", SMOL);
}

#[test]
fn gemma_tokenizes_like_llama_cpp() {
    check_tokenize("gemma", GEMMA);
}

fn template(file: &str) -> ChatTemplate {
    let loaded = load(file);
    let meta = loaded.file.metadata();
    let arch = meta.get_str("general.architecture").unwrap_or("");
    ChatTemplate::from_gguf(meta, arch).unwrap()
}

fn messages(list: &[ChatMessage]) -> Vec<Message> {
    list.iter()
        .map(|m| Message::new(m.role.as_str(), m.content.as_str()))
        .collect()
}

fn check_chat(name: &str, file: &str) {
    let reference = reference(name);
    assert!(!reference.chat.is_empty());
    let template = template(file);
    for case in &reference.chat {
        let rendered = template.render(&messages(&case.messages), true).unwrap();
        assert_eq!(rendered, case.rendered, "{file}");
    }
}

#[test]
fn qwen_chat_template_renders_like_llama_cpp() {
    check_chat("qwen05", QWEN);
}

#[test]
fn smollm_chat_template_renders_like_llama_cpp() {
    check_chat("smol", SMOL);
}

#[test]
fn gemma_without_template_gets_gemma_turns() {
    // The file has no template; llama.cpp would use ChatML (so there is no
    // reference), we use Gemma 3's own format. BOS is left to the tokenizer.
    let template = template(GEMMA);
    let chats = reference("qwen05").chat;
    let two = template
        .render(&messages(&chats[1].messages), true)
        .unwrap();
    assert_eq!(
        two,
        "<start_of_turn>user\nYou are a terse assistant.\n\nWhat is Rust?<end_of_turn>\n\
         <start_of_turn>model\nA systems language.<end_of_turn>\n\
         <start_of_turn>user\nWho made it?<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    // The rendered prompt tokenizes into Gemma's turn markers.
    let tok = &load(GEMMA).tokenizer;
    let ids = tok.encode(&two, true, true);
    assert_eq!(&ids[..3], &[2, 105, 2364]);
}

#[test]
fn decode_inverts_encode() {
    for (name, file) in [("qwen05", QWEN), ("smol", SMOL), ("gemma", GEMMA)] {
        let tok = &load(file).tokenizer;
        for case in reference(name).tokenize {
            let ids = tok.encode(&case.text, false, true);
            assert_eq!(tok.decode(&ids), case.text, "{file}");
            // The BOS piece is its text, so with it the text gains a prefix.
            let with_bos = tok.decode(&tok.encode(&case.text, true, true));
            let bos = tok
                .bos()
                .filter(|_| tok.adds_bos())
                .map_or(String::new(), |b| {
                    String::from_utf8(tok.token_to_piece(b).to_vec()).unwrap()
                });
            assert_eq!(with_bos, bos + &case.text, "{file}");
        }
    }
}

#[test]
fn stream_decoder_reassembles_split_characters() {
    // The reference emoji string, plus rare characters that Gemma's large
    // vocabulary lacks (it has the emoji), so it falls back to bytes too.
    let text = "Emoji: 🦀🚀👍🏽👨‍👩‍👧 ✓ 𓀀𒀿𝔊";
    for file in [QWEN, SMOL, GEMMA] {
        let tok = &load(file).tokenizer;
        let ids = tok.encode(text, false, true);
        // The test only means something if some token ends mid-character.
        assert!(
            ids.iter()
                .any(|&id| std::str::from_utf8(tok.token_to_piece(id)).is_err()),
            "{file}: no token splits a character"
        );
        let mut stream = StreamDecoder::new(tok);
        let mut out = String::new();
        for &id in &ids {
            let chunk = stream.push(id);
            assert!(!chunk.contains('\u{FFFD}'), "{file}: {chunk:?}");
            out += &chunk;
        }
        out += &stream.finish();
        assert_eq!(out, text, "{file}");
    }
}

#[test]
fn special_ids() {
    let qwen = &load(QWEN).tokenizer;
    assert_eq!(qwen.bos(), Some(151643));
    assert_eq!(qwen.eos(), Some(151645));
    assert!(!qwen.adds_bos());
    for id in [151643, 151645] {
        assert!(qwen.is_eog(id));
    }
    assert!(!qwen.is_eog(151644)); // <|im_start|>
    assert_eq!(qwen.vocab_size(), 151936);

    let smol = &load(SMOL).tokenizer;
    assert_eq!((smol.bos(), smol.eos()), (Some(1), Some(2)));
    assert!(smol.is_eog(2) && smol.is_eog(0) && !smol.is_eog(1));

    let gemma = &load(GEMMA).tokenizer;
    assert_eq!((gemma.bos(), gemma.eos()), (Some(2), Some(1)));
    assert!(gemma.adds_bos());
    assert_eq!(gemma.token_id("<end_of_turn>"), Some(106));
    assert!(gemma.is_eog(1) && gemma.is_eog(106) && !gemma.is_eog(105));
    assert_eq!(gemma.token_to_piece(106), b"<end_of_turn>");
    assert_eq!(
        gemma.token_to_piece(gemma.token_id("<0x0A>").unwrap()),
        b"\n"
    );
}

#[test]
fn control_tokens_are_text_unless_parsed() {
    let tok = &load(QWEN).tokenizer;
    let text = "<|im_start|>user";
    assert_eq!(tok.encode(text, false, true)[0], 151644);
    assert!(!tok.encode(text, false, false).contains(&151644));
    // User-defined tokens are matched either way, as in llama.cpp.
    assert_eq!(tok.encode("<tool_call>", false, false), [151657]);
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn arbitrary_input_never_panics() {
    // Pieces that stress the splitters and the special-token matcher.
    const ATOMS: &[&str] = &[
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "\u{A0}",
        "\u{3000}",
        "'s",
        "'LL",
        "'",
        "a",
        "Z",
        "é",
        "\u{301}",
        "7",
        "٣",
        "½",
        "Ⅻ",
        ".",
        "!?",
        "$",
        "`",
        "<",
        ">",
        "|",
        "<|im_start|>",
        "<|im_end",
        "<end_of_turn>",
        "<start_of_turn",
        "<0x0A>",
        "▁",
        "你好",
        "🦀",
        "👍🏽",
        "\u{200D}",
        "\u{FFFD}",
        "\u{E000}",
        "\u{10FFFF}",
        "\u{0}",
        "\u{1F}",
        "\u{7F}",
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut inputs = Vec::new();
    for _ in 0..150 {
        let mut s = String::new();
        for _ in 0..rng.below(40) {
            s += ATOMS[rng.below(ATOMS.len())];
        }
        inputs.push(s);
        let bytes: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        inputs.push(String::from_utf8_lossy(&bytes).into_owned());
        let chars: String = (0..rng.below(32))
            .filter_map(|_| char::from_u32(rng.next() as u32 % 0x11_0000))
            .collect();
        inputs.push(chars);
    }
    inputs.push(" ".repeat(5000));
    inputs.push("a".repeat(5000));
    inputs.push("1".repeat(1000));

    for file in [QWEN, SMOL, GEMMA] {
        let tok = &load(file).tokenizer;
        let n = tok.vocab_size() as u32;
        for s in &inputs {
            for (bos, special) in [(false, false), (true, true), (false, true)] {
                let ids = tok.encode(s, bos, special);
                assert!(ids.iter().all(|&id| id < n), "{file}: {s:?}");
                tok.decode(&ids);
            }
        }
        let ids: Vec<u32> = (0..2000).map(|_| rng.next() as u32 % (n + 10)).collect();
        tok.decode(&ids);
        let mut stream = StreamDecoder::new(tok);
        for &id in &ids {
            stream.push(id);
        }
        stream.finish();
    }
}
