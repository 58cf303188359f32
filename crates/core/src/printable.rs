//! Text as a terminal may show it. Stored names, export file names and a gateway's reasons can
//! hold control characters (an escape sequence that clears the screen or retitles the window, a
//! line break that forges a row) and bidirectional controls (which make what follows display in
//! another order): before reaching a person's terminal each becomes U+FFFD.

use std::borrow::Cow;

/// Whether `c` could move the cursor, break a line or reorder what follows it.
fn is_hostile(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control and bidirectional character replaced by U+FFFD (borrowed when
/// there is none): one line, whatever it held.
pub fn printable(text: &str) -> Cow<'_, str> {
    replaced(text, is_hostile)
}

/// [`printable`], keeping line breaks: for a message of several lines (an error with its
/// causes, a list of reasons).
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    replaced(text, |c| c != '\n' && is_hostile(c))
}

fn replaced(text: &str, hostile: impl Fn(char) -> bool) -> Cow<'_, str> {
    if text.chars().any(&hostile) {
        Cow::Owned(
            text.chars()
                .map(|c| if hostile(c) { '\u{FFFD}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_line_breaks_and_overrides_are_replaced() {
        assert_eq!(
            printable("Lê\u{1b}[2JVăn\nTám\u{202e}x\u{2067}"),
            "Lê\u{fffd}[2JVăn\u{fffd}Tám\u{fffd}x\u{fffd}"
        );
    }

    #[test]
    fn a_message_of_several_lines_keeps_its_lines_only() {
        assert_eq!(
            printable_lines("a\nb\r\u{1b}[1Ac"),
            "a\nb\u{fffd}\u{fffd}[1Ac"
        );
    }

    #[test]
    fn ordinary_vietnamese_text_is_kept_as_it_is() {
        let name = "Nguyễn Thị Ánh Tuyết, 12/3 Lê Lợi";
        assert!(matches!(printable(name), Cow::Borrowed(n) if n == name));
    }
}
