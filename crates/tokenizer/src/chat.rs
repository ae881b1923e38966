//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`)
//! rendered the way Hugging Face and llama.cpp render it, or a built-in one
//! per architecture when the file has none.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value};
use quarrel_gguf::Metadata;

use crate::vocab::{Specials, Vocab};
use crate::TokenizerError;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error(transparent)]
    Vocab(#[from] TokenizerError),
    #[error("chat template: {0}")]
    Template(String),
}

impl From<Error> for ChatTemplateError {
    fn from(e: Error) -> Self {
        ChatTemplateError::Template(e.to_string())
    }
}

/// A Jinja chat template with the values it renders with.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    /// The tokenizer adds BOS (EOS) itself, so a leading BOS (trailing EOS)
    /// the template writes is dropped, as llama.cpp does, to avoid doubling.
    strip_bos: bool,
    strip_eos: bool,
}

impl ChatTemplate {
    /// The file's template, or the built-in one for `arch`
    /// (`general.architecture`) when it has none.
    pub fn from_gguf(meta: &Metadata, arch: &str) -> Result<Self, ChatTemplateError> {
        let mut vocab = Vocab::from_gguf(meta)?;
        vocab.name_empty_tokens();
        let specials = Specials::resolve(&vocab)?;
        let piece = |id: Option<u32>| {
            id.and_then(|id| vocab.tokens.get(id as usize).map(|text| (id, text)))
                .map(|(id, text)| {
                    String::from_utf8_lossy(&specials.piece(vocab.kind, text, id)).into_owned()
                })
                .unwrap_or_default()
        };
        // As llama.cpp: the default template, else the tool-use one; the
        // name "chatml" means the built-in ChatML.
        let named = |key| meta.get_str(key).filter(|s| !s.is_empty());
        let source = match named("tokenizer.chat_template") {
            Some("chatml") => CHATML.to_string(),
            Some(s) => s.to_string(),
            None => match named("tokenizer.chat_template.tool_use") {
                Some(s) => s.to_string(),
                None => builtin(arch, &vocab).to_string(),
            },
        };
        ChatTemplate::new(
            source,
            piece(specials.bos),
            piece(specials.eos),
            specials.add_bos,
            specials.add_eos,
        )
    }

    /// A template from source. `bos_token` / `eos_token` are the texts the
    /// template sees; `strip_bos` / `strip_eos` say whether the tokenizer adds
    /// those tokens itself. Fails on a syntax error.
    pub fn new(
        source: String,
        bos_token: String,
        eos_token: String,
        strip_bos: bool,
        strip_eos: bool,
    ) -> Result<Self, ChatTemplateError> {
        environment()?.template_from_str(&source)?;
        Ok(ChatTemplate {
            source,
            bos_token,
            eos_token,
            strip_bos,
            strip_eos,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the conversation; with `add_generation_prompt`, ends with the
    /// opening of the assistant's turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let env = environment()?;
        let template = env.template_from_str(&self.source)?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from(BTreeMap::from([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ]))
            })
            .collect();
        let ctx = Value::from(BTreeMap::from([
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
            // llama.cpp passes this (true unless reasoning is turned off);
            // templates that test it would otherwise see it undefined.
            ("enable_thinking", Value::from(true)),
        ]));
        let mut out = template.render(ctx)?;
        if self.strip_bos && !self.bos_token.is_empty() && out.starts_with(&self.bos_token) {
            out.drain(..self.bos_token.len());
        }
        if self.strip_eos && !self.eos_token.is_empty() && out.ends_with(&self.eos_token) {
            out.truncate(out.len() - self.eos_token.len());
        }
        Ok(out)
    }
}

/// An environment configured as Hugging Face's `apply_chat_template`
/// configures Jinja2: blocks trimmed, Python string methods, and the
/// `raise_exception` / `strftime_now` globals.
fn environment() -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |format: String| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        strftime(&format, secs)
    });
    Ok(env)
}

/// Formats a Unix time (UTC) with the common `strftime` conversions; others
/// are kept as written.
fn strftime(format: &str, unix_secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let weekday = DAYS[(days % 7) as usize];
    let month_name = MONTHS[(month - 1) as usize];

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01, by Howard
/// Hinnant's civil-from-days algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// ChatML, as llama.cpp falls back to for files without a template.
const CHATML: &str = "{%- for message in messages -%}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/// Gemma 3's template (text only): no system role, so a system message is
/// put at the start of the first user turn; the assistant is "model".
const GEMMA: &str = "{{- bos_token -}}\
{%- if messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- else -%}\
{%- set first_user_prefix = '' -%}\
{%- set loop_messages = messages -%}\
{%- endif -%}\
{%- for message in loop_messages -%}\
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\
{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}\
{%- endif -%}\
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
{{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') -}}\
{{- message['content'] | trim -}}\
{{- '<end_of_turn>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}";

/// Llama 3 / 3.1 header style.
const LLAMA3: &str = "{{- bos_token -}}\
{%- for message in messages -%}\
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}";

/// Llama 2 chat: `[INST]` turns, the system prompt in `<<SYS>>` inside the
/// first one.
const LLAMA2: &str = "{%- if messages[0]['role'] == 'system' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- set system_message = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' -%}\
{%- else -%}\
{%- set loop_messages = messages -%}\
{%- set system_message = '' -%}\
{%- endif -%}\
{%- for message in loop_messages -%}\
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\
{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}\
{%- endif -%}\
{%- if message['role'] == 'user' -%}\
{{- bos_token + '[INST] ' + ((system_message + message['content']) if loop.first else message['content']) | trim + ' [/INST]' -}}\
{%- else -%}\
{{- ' ' + message['content'] | trim + ' ' + eos_token -}}\
{%- endif -%}\
{%- endfor -%}";

/// Mistral instruct: `[INST]` turns without `<<SYS>>`; a system prompt
/// opens the first user turn.
const MISTRAL: &str = "{%- if messages[0]['role'] == 'system' -%}\
{%- set system = messages[0]['content'] + '\\n\\n' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- else -%}\
{%- set system = '' -%}\
{%- set loop_messages = messages -%}\
{%- endif -%}\
{{- bos_token -}}\
{%- for message in loop_messages -%}\
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\
{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}\
{%- endif -%}\
{%- if message['role'] == 'user' -%}\
{{- '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' -}}\
{%- else -%}\
{{- message['content'] + eos_token -}}\
{%- endif -%}\
{%- endfor -%}";

/// Phi-3: `<|role|>` headers closed by `<|end|>`.
const PHI3: &str = "{%- for message in messages -%}\
{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}";

/// The built-in template for an architecture; `llama` files are told apart
/// by their vocabulary (Llama 3 headers, Mistral's `[INST]` token, else
/// Llama 2). Anything else gets ChatML, as in llama.cpp.
fn builtin(arch: &str, vocab: &Vocab) -> &'static str {
    let has = |text: &str| vocab.tokens.iter().any(|t| t == text);
    match arch {
        "gemma" | "gemma2" | "gemma3" | "gemma3n" => GEMMA,
        "llama" if has("<|start_header_id|>") => LLAMA3,
        "llama" if has("[INST]") => MISTRAL,
        "llama" => LLAMA2,
        "mistral" | "mistral3" => MISTRAL,
        "phi3" => PHI3,
        _ => CHATML,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, bos: &str, strip_bos: bool, msgs: &[(&str, &str)]) -> String {
        let t =
            ChatTemplate::new(source.into(), bos.into(), "</s>".into(), strip_bos, false).unwrap();
        let msgs: Vec<Message> = msgs.iter().map(|(r, c)| Message::new(*r, *c)).collect();
        t.render(&msgs, true).unwrap()
    }

    #[test]
    fn gemma_folds_system_into_first_user_turn() {
        let out = render(
            GEMMA,
            "<bos>",
            false,
            &[
                ("system", "Be brief."),
                ("user", " Hi "),
                ("assistant", "Hello."),
                ("user", "Bye"),
            ],
        );
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
             <start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn leading_bos_is_dropped_when_the_tokenizer_adds_it() {
        let out = render(GEMMA, "<bos>", true, &[("user", "Hi")]);
        assert_eq!(
            out,
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn builtin_templates() {
        let conv = [
            ("system", "S"),
            ("user", "U"),
            ("assistant", "A"),
            ("user", "V"),
        ];
        assert_eq!(
            render(CHATML, "", false, &conv[1..2]),
            "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            render(LLAMA3, "<|begin_of_text|>", false, &conv[..2]),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            render(LLAMA2, "<s>", true, &conv),
            "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] V [/INST]"
        );
        assert_eq!(
            render(MISTRAL, "<s>", true, &conv),
            "[INST] S\n\nU [/INST]A</s>[INST] V [/INST]"
        );
        assert_eq!(
            render(PHI3, "", false, &conv[1..2]),
            "<|user|>\nU<|end|>\n<|assistant|>\n"
        );
    }

    #[test]
    fn python_methods_and_exceptions() {
        let out = render(
            "{{ messages[0].content.strip().upper() }}",
            "",
            false,
            &[("user", " x ")],
        );
        assert_eq!(out, "X");
        let t = ChatTemplate::new(
            "{{ raise_exception('no') }}".into(),
            String::new(),
            String::new(),
            false,
            false,
        )
        .unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("no"), "{err}");
        assert!(ChatTemplate::new(
            "{% if %}".into(),
            String::new(),
            String::new(),
            false,
            false
        )
        .is_err());
    }

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %e %H:%M:%S %y%% %Q", t),
            "Friday July 26 13:05:09 24% %Q"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
