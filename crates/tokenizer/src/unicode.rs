//! Code point classes exactly as llama.cpp's pre-tokenizers see them, and the
//! GPT-2 byte-to-character mapping.
//!
//! Rust's `char::is_alphabetic` / `is_numeric` are derived properties
//! (Alphabetic includes marks such as U+0345 and letter numbers such as
//! U+2160), not the general categories `\p{L}` / `\p{N}` that the regexes name,
//! and follow whatever Unicode version the toolchain ships. We need llama.cpp's
//! exact classes, which come from Unicode 15.1, so the crate carries its own
//! generated table (see `scripts/gen_unicode_tables.py`).

use crate::unicode_tables::CLASS_RUNS;

/// The major general category of a code point (`\p{L}`, `\p{N}`, ...), with
/// unassigned code points kept apart from other controls as llama.cpp does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Unassigned,
    Number,
    Letter,
    Separator,
    Mark,
    Punctuation,
    Symbol,
    Control,
}

pub(crate) fn class(c: char) -> Class {
    let cp = c as u32;
    // The first run starts at 0, so the index is at least 1.
    let i = CLASS_RUNS.partition_point(|&(start, _)| start <= cp);
    CLASS_RUNS[i.saturating_sub(1)].1
}

/// Unicode's White_Space property: llama.cpp's `\s` for its hand-written
/// splitters.
pub(crate) fn is_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{09}'..='\u{0D}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// GPT-2's reversible byte-to-character table: printable Latin-1 bytes stand
/// for themselves, the other 68 bytes take code points 256.. in byte order, so
/// every byte becomes a visible character a BPE vocabulary can hold.
const fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 256u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        let cp = if printable {
            b as u32
        } else {
            let cp = next_extra;
            next_extra += 1;
            cp
        };
        table[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

static BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

/// Every mapped character is below U+0144 (256 + 68).
const MAPPED_LIMIT: usize = 0x144;

const fn char_to_byte_table() -> [Option<u8>; MAPPED_LIMIT] {
    let forward = byte_to_char_table();
    let mut table = [None; MAPPED_LIMIT];
    let mut b = 0usize;
    while b < 256 {
        table[forward[b] as usize] = Some(b as u8);
        b += 1;
    }
    table
}

static CHAR_TO_BYTE: [Option<u8>; MAPPED_LIMIT] = char_to_byte_table();

pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The inverse of [`byte_to_char`]; `None` for characters outside the table.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    CHAR_TO_BYTE.get(c as usize).copied().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_general_categories() {
        assert_eq!(class('a'), Class::Letter);
        assert_eq!(class('7'), Class::Number);
        assert_eq!(class('_'), Class::Punctuation);
        assert_eq!(class('$'), Class::Symbol);
        assert_eq!(class(' '), Class::Separator);
        assert_eq!(class('\n'), Class::Control);
        // U+0345 is Alphabetic for Rust but a mark (\p{M}) for the regexes.
        assert!('\u{345}'.is_alphabetic());
        assert_eq!(class('\u{345}'), Class::Mark);
        // U+2160 (Roman numeral one) is a letter number: \p{N}, not \p{L}.
        assert_eq!(class('\u{2160}'), Class::Number);
        // CJK Extension I (new in Unicode 15.1) is a letter for llama.cpp.
        assert_eq!(class('\u{2EBF0}'), Class::Letter);
        assert_eq!(class('\u{1C89}'), Class::Unassigned);
        assert_eq!(class('\u{10FFFF}'), Class::Unassigned);
    }

    #[test]
    fn byte_table_round_trips() {
        assert_eq!(byte_to_char(b' '), '\u{120}');
        assert_eq!(byte_to_char(b'\n'), '\u{10A}');
        assert_eq!(byte_to_char(b'a'), 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('\u{144}'), None);
    }
}
