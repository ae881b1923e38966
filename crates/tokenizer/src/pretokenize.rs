//! Pre-tokenizers for byte-level BPE: split text into words before merging,
//! as llama.cpp does for each `tokenizer.ggml.pre`.
//!
//! llama.cpp runs a list of regexes per pre-tokenizer, each one splitting the
//! pieces the previous one left. The big GPT-2 / Llama 3 / Qwen2 regexes have
//! hand-written splitters in its `unicode.cpp`, and their quirks (how
//! `\s+(?!\S)` behaves at a piece's end, which class decides the punctuation
//! branch) are part of its behaviour, so they are reproduced here rule for
//! rule. The remaining regexes we support are single character classes
//! (`\p{N}`, `[\p{P}$+<=>^~|]+`, `[0-9][0-9][0-9]`), which need no regex
//! engine at all.

use std::ops::Range;

use crate::unicode::{byte_to_char, class, is_whitespace, Class};

/// One regex of a pre-tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// The Llama 3 regex with `\p{N}` in place of `\p{N}{1,3}`.
    Qwen2,
    /// `\p{N}`: every number character on its own.
    EachNumber,
    /// `\p{N}+`
    NumberRuns,
    /// `[\p{P}\$\+<=>\^~\|]+`, with a backtick too when `backtick`.
    PunctuationRuns { backtick: bool },
    /// `[0-9][0-9][0-9]`
    DigitTriples,
}

const DEFAULT: &[Stage] = &[
    Stage::PunctuationRuns { backtick: false },
    Stage::Gpt2,
    Stage::NumberRuns,
    Stage::DigitTriples,
];
const FALCON: &[Stage] = &[
    Stage::PunctuationRuns { backtick: true },
    Stage::Gpt2,
    Stage::DigitTriples,
];
const GPT2: &[Stage] = &[Stage::Gpt2];
const STARCODER: &[Stage] = &[Stage::EachNumber, Stage::Gpt2];
const LLAMA3: &[Stage] = &[Stage::Llama3];
const QWEN2: &[Stage] = &[Stage::Qwen2];

/// What a `tokenizer.ggml.pre` name selects: the splitter, and the vocabulary
/// flags llama.cpp ties to the same name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreConfig {
    stages: &'static [Stage],
    /// A word that is already a token is emitted whole, without merging.
    pub ignore_merges: bool,
    /// Undo tokenization spaces (" ," -> ",", ...) when decoding.
    pub clean_spaces: bool,
    /// The default for `add_bos_token` when the file does not say.
    pub add_bos: bool,
    /// The model has no BOS token unless the file names one.
    pub no_default_bos: bool,
}

/// Names llama.cpp accepts whose splitters need a full regex engine (lookahead,
/// script ranges) or a different vocabulary model; Quarrel does not have them.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "afmoe",
    "bailingmoe",
    "bailingmoe2",
    "bloom",
    "chameleon",
    "cohere2moe",
    "deepseek-coder",
    "deepseek-llm",
    "deepseek-v3",
    "exaone-moe",
    "gemma4",
    "gpt-4o",
    "gpt3-finnish",
    "granite-embed-multi-311m",
    "granite-embed-multi-97m",
    "hunyuan-dense",
    "hy_v4",
    "jais-2",
    "joyai-llm",
    "kanana2",
    "kimi-k2",
    "laguna",
    "llada-moe",
    "llama4",
    "minicpm5",
    "minimax-m2",
    "poro-chat",
    "qwen35",
    "sarvam-moe",
    "seed-coder",
    "spark2_5",
    "superbpe",
    "talkie",
    "tekken",
    "tiny_aya",
    "ufakzeka",
    "viking",
    "whitespace",
    "youtu",
];

/// Why a pre-tokenizer name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PreError {
    /// llama.cpp knows the name but Quarrel has no splitter for it.
    Unsupported,
    /// Neither llama.cpp nor Quarrel knows the name.
    Unknown,
}

impl PreConfig {
    /// The configuration llama.cpp uses for `name` (an empty name means the
    /// file had none, which llama.cpp treats as `default`).
    pub(crate) fn for_name(name: &str) -> Result<PreConfig, PreError> {
        let base = PreConfig {
            stages: DEFAULT,
            ignore_merges: false,
            clean_spaces: true,
            add_bos: false,
            no_default_bos: false,
        };
        let with = |stages, clean_spaces| PreConfig {
            stages,
            clean_spaces,
            ..base
        };
        Ok(match name {
            "" | "default" => base,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => PreConfig {
                ignore_merges: true,
                add_bos: true,
                ..with(LLAMA3, true)
            },
            "dbrx" | "smaug-bpe" => with(LLAMA3, true),
            "chatglm-bpe" => PreConfig {
                no_default_bos: true,
                ..with(LLAMA3, true)
            },
            "glm4" | "glm5" => PreConfig {
                no_default_bos: true,
                ignore_merges: true,
                ..with(LLAMA3, true)
            },
            "falcon" => with(FALCON, true),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en"
            | "jina-v2-code" | "roberta-bpe" | "exaone4" | "mpt" | "olmo" | "jais" => {
                with(GPT2, true)
            }
            "trillion" | "granite-docling" => with(GPT2, false),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                with(STARCODER, true)
            }
            "command-r" | "smollm" => with(STARCODER, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
            | "grok-2" => with(QWEN2, false),
            "megrez" | "stablelm2" => with(QWEN2, true),
            _ if KNOWN_UNSUPPORTED.contains(&name) => return Err(PreError::Unsupported),
            _ => return Err(PreError::Unknown),
        })
    }

    /// Splits `text` into words, each already mapped through the GPT-2 byte
    /// table (so it can be looked up in a byte-level BPE vocabulary).
    pub(crate) fn split(&self, text: &str) -> Vec<String> {
        let cpts: Vec<char> = text.chars().collect();
        self.split_chars(&cpts)
            .into_iter()
            .map(|word| byte_encode(&cpts[word]))
            .collect()
    }

    /// The words of `cpts`, as index ranges.
    fn split_chars(&self, cpts: &[char]) -> Vec<Range<usize>> {
        // One word to start with: the whole text.
        let mut words: Vec<Range<usize>> = std::iter::once(0..cpts.len()).collect();
        for &stage in self.stages {
            let mut next = Vec::with_capacity(words.len() * 2);
            for word in words {
                split_word(stage, cpts, word, &mut next);
            }
            words = next;
        }
        words
    }
}

fn byte_encode(chars: &[char]) -> String {
    let mut out = String::with_capacity(chars.len() * 2);
    let mut buf = [0u8; 4];
    for c in chars {
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            out.push(byte_to_char(b));
        }
    }
    out
}

fn split_word(stage: Stage, cpts: &[char], word: Range<usize>, out: &mut Vec<Range<usize>>) {
    let cut = Cutter {
        cpts,
        end: word.end,
        done: word.start,
        out,
    };
    match stage {
        Stage::Gpt2 => cut.gpt2(word.start),
        Stage::Llama3 => cut.llama3(word.start, NumberRule::UpToThree),
        Stage::Qwen2 => cut.llama3(word.start, NumberRule::One),
        Stage::EachNumber => cut.matches(word.start, |c, p| c.number(p).then_some(p + 1)),
        Stage::NumberRuns => {
            cut.matches(word.start, |c, p| c.run(p, |ch| class(ch) == Class::Number))
        }
        Stage::PunctuationRuns { backtick } => cut.matches(word.start, |c, p| {
            c.run(p, |ch| {
                class(ch) == Class::Punctuation
                    || matches!(ch, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
                    || (backtick && ch == '`')
            })
        }),
        Stage::DigitTriples => cut.matches(word.start, |c, p| {
            (0..3)
                .all(|i| c.at(p + i).is_some_and(|ch| ch.is_ascii_digit()))
                .then_some(p + 3)
        }),
    }
}

#[derive(Clone, Copy)]
enum NumberRule {
    /// `\p{N}{1,3}`
    UpToThree,
    /// `\p{N}`
    One,
}

/// Cuts one word `[done, end)` of `cpts` into pieces, left to right.
struct Cutter<'a> {
    cpts: &'a [char],
    end: usize,
    /// Everything before this index has been emitted.
    done: usize,
    out: &'a mut Vec<Range<usize>>,
}

impl Cutter<'_> {
    /// The character at `pos`, or `None` past the word's end (llama.cpp's
    /// splitters never look outside the current word).
    fn at(&self, pos: usize) -> Option<char> {
        if pos < self.end {
            self.cpts.get(pos).copied()
        } else {
            None
        }
    }

    fn is(&self, pos: usize, want: Class) -> bool {
        self.at(pos).is_some_and(|c| class(c) == want)
    }

    fn letter(&self, pos: usize) -> bool {
        self.is(pos, Class::Letter)
    }

    fn number(&self, pos: usize) -> bool {
        self.is(pos, Class::Number)
    }

    fn space(&self, pos: usize) -> bool {
        self.at(pos).is_some_and(is_whitespace)
    }

    /// `[^\s\p{L}\p{N}]` inside the word.
    fn other(&self, pos: usize) -> bool {
        self.at(pos).is_some_and(|c| {
            !is_whitespace(c) && !matches!(class(c), Class::Letter | Class::Number)
        })
    }

    /// The end of the run of characters matching `pred` that starts at `pos`,
    /// or `None` if the character at `pos` does not match.
    fn run(&self, pos: usize, pred: impl Fn(char) -> bool) -> Option<usize> {
        let mut end = pos;
        while self.at(end).is_some_and(&pred) {
            end += 1;
        }
        (end > pos).then_some(end)
    }

    /// Emits `[done, to)` as a piece, if it is not empty.
    fn cut(&mut self, to: usize) {
        if to > self.done {
            self.out.push(self.done..to);
        }
        self.done = to;
    }

    /// Regex-iterator splitting: each match is a piece, and so is each stretch
    /// of text between matches. `match_at(self, p)` gives the end of a match
    /// starting at `p`.
    fn matches(mut self, start: usize, match_at: impl Fn(&Self, usize) -> Option<usize>) {
        let mut pos = start;
        while pos < self.end {
            match match_at(&self, pos) {
                Some(m_end) => {
                    self.cut(pos);
                    self.cut(m_end);
                    pos = m_end;
                }
                None => pos += 1,
            }
        }
        self.cut(self.end);
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d`, case-insensitively if `fold`: the end of the
    /// contraction starting at `pos`, if there is one.
    fn contraction(&self, pos: usize, fold: bool) -> Option<usize> {
        if self.at(pos) != Some('\'') {
            return None;
        }
        // Only ASCII capitals lower-case to these letters (checked against
        // Unicode's simple case mappings), so ASCII folding is exact.
        let lower = |p| {
            self.at(p)
                .map(|c| if fold { c.to_ascii_lowercase() } else { c })
        };
        let next = lower(pos + 1)?;
        if matches!(next, 's' | 't' | 'm' | 'd') {
            return Some(pos + 2);
        }
        let pair = (next, lower(pos + 2)?);
        matches!(pair, ('r', 'e') | ('v', 'e') | ('l', 'l')).then_some(pos + 3)
    }

    /// The whitespace rules shared by the three splitters: `\s+(?!\S)` leaves
    /// the last space for the next word when a non-space follows inside this
    /// word; otherwise the whole run is one piece.
    fn whitespace_run(&self, pos: usize) -> Option<usize> {
        let mut n = 0;
        while self.space(pos + n) {
            n += 1;
        }
        if n > 1 && pos + n < self.end {
            Some(pos + n - 1)
        } else if n > 0 {
            Some(pos + n)
        } else {
            None
        }
    }

    fn gpt2(mut self, start: usize) {
        let mut pos = start;
        while pos < self.end {
            if let Some(end) = self.contraction(pos, false) {
                pos = end;
                self.cut(pos);
                continue;
            }
            // ` ?X+`: an optional leading space, then a run of one class; the
            // class is decided by the character after the space.
            let body = if self.at(pos) == Some(' ') {
                pos + 1
            } else {
                pos
            };
            let run_end = if self.letter(body) {
                self.run(body, |c| class(c) == Class::Letter)
            } else if self.number(body) {
                self.run(body, |c| class(c) == Class::Number)
            } else if self.other(body) {
                self.run(body, |c| {
                    !is_whitespace(c) && !matches!(class(c), Class::Letter | Class::Number)
                })
            } else {
                None
            };
            pos = run_end
                .or_else(|| self.whitespace_run(pos))
                .unwrap_or(pos + 1);
            self.cut(pos);
        }
        self.cut(self.end);
    }

    fn llama3(mut self, start: usize, numbers: NumberRule) {
        let mut pos = start;
        while pos < self.end {
            let Some(c) = self.at(pos) else { break };
            if let Some(end) = self.contraction(pos, true) {
                pos = end;
                self.cut(pos);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(c == '\r' || c == '\n' || self.number(pos))
                && (self.letter(pos) || self.letter(pos + 1))
            {
                pos += 1;
                while self.letter(pos) {
                    pos += 1;
                }
                self.cut(pos);
                continue;
            }
            if self.number(pos) {
                match numbers {
                    // `\p{N}{1,3}`: groups of three from the left.
                    NumberRule::UpToThree => {
                        let mut group = pos;
                        while self.number(pos) {
                            pos += 1;
                            if pos - group >= 3 {
                                self.cut(pos);
                                group = pos;
                            }
                        }
                    }
                    NumberRule::One => pos += 1,
                }
                self.cut(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`. llama.cpp tests the character after
            // an optional space and accepts the end of the word there, so a
            // lone trailing space is taken here (with the same result).
            let body = if c == ' ' { pos + 1 } else { pos };
            if !(self.space(body) || self.letter(body) || self.number(body)) {
                pos = body;
                while self.other(pos) {
                    pos += 1;
                }
                while matches!(self.at(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                self.cut(pos);
                continue;
            }
            // `\s*[\r\n]+`: up to the last line break of the whitespace run.
            let mut n = 0;
            let mut after_break = None;
            while self.space(pos + n) {
                if matches!(self.at(pos + n), Some('\r' | '\n')) {
                    after_break = Some(pos + n + 1);
                }
                n += 1;
            }
            pos = after_break
                .or_else(|| self.whitespace_run(pos))
                .unwrap_or(pos + 1);
            self.cut(pos);
        }
        self.cut(self.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let cpts: Vec<char> = text.chars().collect();
        let cfg = PreConfig::for_name(pre).unwrap();
        cfg.split_chars(&cpts)
            .into_iter()
            .map(|w| cpts[w].iter().collect())
            .collect()
    }

    #[test]
    fn gpt2_regex() {
        assert_eq!(
            pieces("gpt-2", "Hello, world!  it's 42"),
            ["Hello", ",", " world", "!", " ", " it", "'s", " 42"]
        );
        // A trailing whitespace run stays whole.
        assert_eq!(pieces("gpt-2", "a   "), ["a", "   "]);
        assert_eq!(pieces("gpt-2", "I'M"), ["I", "'", "M"]);
    }

    #[test]
    fn llama3_regex() {
        assert_eq!(
            pieces("llama-bpe", "I'M 1234567 ok\n\n  x"),
            ["I", "'M", " ", "123", "456", "7", " ok", "\n\n", " ", " x"]
        );
        assert_eq!(pieces("llama-bpe", "a.\n\nb"), ["a", ".\n\n", "b"]);
    }

    #[test]
    fn qwen2_regex_splits_every_digit() {
        assert_eq!(pieces("qwen2", "x 123"), ["x", " ", "1", "2", "3"]);
    }

    #[test]
    fn default_runs_punctuation_numbers_and_triples() {
        assert_eq!(
            pieces("default", "a+=b 12345"),
            ["a", "+=", "b", " ", "123", "45"]
        );
    }

    #[test]
    fn starcoder_isolates_numbers() {
        assert_eq!(pieces("smollm", "v2 10"), ["v", "2", " ", "1", "0"]);
    }

    #[test]
    fn names() {
        assert!(PreConfig::for_name("qwen2").is_ok());
        assert_eq!(
            PreConfig::for_name("tekken").unwrap_err(),
            PreError::Unsupported
        );
        assert_eq!(PreConfig::for_name("nope").unwrap_err(), PreError::Unknown);
    }
}
