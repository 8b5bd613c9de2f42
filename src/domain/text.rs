//! Names and variables that arrive from outside (the intake API) are shown to
//! people inside `thing` values: characters that reorder or hide text there
//! (bidi controls such as U+202E, zero-width and other invisible format
//! characters) are stripped, so that what is stored is what is seen.

/// Whether `c` is invisible or reorders text: bidi controls, zero-width and
/// other format characters that have no place in a name or a value.
fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                  // soft hyphen
        | '\u{061C}'                // Arabic letter mark
        | '\u{200B}'..='\u{200F}'   // zero-width space, non-joiner, joiner, LRM, RLM
        | '\u{202A}'..='\u{202E}'   // LRE, RLE, PDF, LRO, RLO
        | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}'   // LRI, RLI, FSI, PDI
        | '\u{FEFF}'                // zero-width no-break space (BOM)
    )
}

/// `s` without hidden characters, trimmed.
pub fn strip_hidden(s: &str) -> String {
    s.chars()
        .filter(|c| !is_hidden(*c))
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_and_zero_width_characters_are_stripped() {
        assert_eq!(strip_hidden("\u{202E}gnp.exe"), "gnp.exe");
        assert_eq!(strip_hidden("Li\u{200B}\u{200D}Lei"), "LiLei");
        assert_eq!(strip_hidden("\u{FEFF} 李雷 \u{2066}"), "李雷");
        assert_eq!(strip_hidden("\u{200B}"), "");
        // Visible text, emoji and CJK punctuation stay.
        assert_eq!(strip_hidden("会员·小明 🎉"), "会员·小明 🎉");
    }
}
