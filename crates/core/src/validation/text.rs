//! One rule for every string a document carries: what characters it may hold depends on what
//! the field is (a code, a line such as a name, or a narrative), and nothing that renders
//! differently from what it stores gets through.

use std::fmt::Display;

use unicode_normalization::{IsNormalized, is_nfc, is_nfc_quick};

use super::checker::Checker;

/// What a string field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextKind {
    /// An identifier or code (MA_CSKCB, MA_LK, MA_DICH_VU, slip numbers): no control
    /// characters and no surrounding space, because it is compared and joined as it stands.
    Code,
    /// One line of text (a name, an address, a unit): no control characters at all.
    Line,
    /// Clinical narrative (signs, course of illness, conclusions): tab and line breaks allowed.
    Narrative,
}

/// Bidirectional embeddings, overrides and isolates: they make a text display in another
/// order than it is stored (a name or a dose that reads differently on screen).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Format characters that render as nothing (zero-width spaces and joiners, soft hyphens,
/// invisible operators, tags, a BOM inside text): a name or code holding one looks like
/// another and is found by no search. Bidirectional controls are reported on their own.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}'
        | '\u{206A}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Private-use code points and noncharacters: no meaning any reader shares.
fn is_private(c: char) -> bool {
    let u = c as u32;
    matches!(u, 0xE000..=0xF8FF | 0xF0000..=0x10FFFF | 0xFDD0..=0xFDEF) || (u & 0xFFFE) == 0xFFFE
}

impl Checker<'_> {
    /// Checks one string field against the rule of its kind. Empty strings pass (required
    /// fields are checked by `required`).
    pub fn text_of(&mut self, path: impl Display + Copy, value: &str, kind: TextKind) {
        if value.is_empty() {
            return;
        }
        // Nearly every value is plain ASCII without controls: one pass decides it.
        let plain = value.bytes().all(|b| (0x20..0x7F).contains(&b));
        if !plain {
            self.characters(path, value, kind);
        }
        if kind == TextKind::Code && value.trim() != value {
            self.error(
                "code.untrimmed",
                path,
                Some(value.escape_debug().to_string()),
                "the code has space before or after it; send it without (codes are compared as \
                 they stand)"
                    .into(),
                "Mã có khoảng trắng ở đầu hoặc cuối; hãy gửi mã không có khoảng trắng".into(),
            );
        }
    }

    /// Reports the first character of `value` that `found` picks, under `code`; `{cp}` in the
    /// messages becomes its code point.
    fn first_char(
        &mut self,
        path: impl Display,
        value: &str,
        code: &str,
        found: impl Fn(char) -> bool,
        en: &str,
        vi: &str,
    ) {
        if let Some(c) = value.chars().find(|&c| found(c)) {
            let cp = format!("U+{:04X}", c as u32);
            self.error(
                code,
                path,
                Some(cp.clone()),
                en.replace("{cp}", &cp),
                vi.replace("{cp}", &cp),
            );
        }
    }

    fn characters(&mut self, path: impl Display + Copy, value: &str, kind: TextKind) {
        // Nearly every text holds none of the characters the rules below look for: one pass
        // decides whether they need to look at all.
        let suspicious = value.chars().any(|c| {
            c.is_control()
                || is_bidi_control(c)
                || is_invisible(c)
                || is_private(c)
                || c == '\u{FFFD}'
        });
        if suspicious {
            if value.contains('\0') {
                self.error(
                    "text.nul",
                    path,
                    None,
                    "the text contains a NUL character (0x00); remove it in the HIS export".into(),
                    "Văn bản chứa ký tự NUL (0x00); hãy loại bỏ trong dữ liệu xuất từ HIS".into(),
                );
            } else {
                let breaks = kind == TextKind::Narrative;
                // Constant messages: this runs for every text that is not plain ASCII.
                let en = if breaks {
                    "the text contains the control character {cp}; only tab and line breaks are \
                     allowed in narrative text; remove it in the HIS export"
                } else {
                    "the text contains the control character {cp}; this field is one line and \
                     allows none; remove it in the HIS export"
                };
                self.first_char(
                    path,
                    value,
                    "text.control",
                    |c| c.is_control() && !(breaks && matches!(c, '\t' | '\n' | '\r')),
                    en,
                    "Văn bản chứa ký tự điều khiển {cp}; hãy loại bỏ trong dữ liệu xuất từ HIS",
                );
            }
            self.first_char(
                path,
                value,
                "text.bidi",
                is_bidi_control,
                "the text contains the bidirectional control {cp}, which makes it display in another order than it is stored; remove it",
                "Văn bản chứa ký tự điều khiển hướng {cp} (hiển thị khác với nội dung lưu); hãy loại bỏ",
            );
            self.first_char(
                path,
                value,
                "text.invisible",
                is_invisible,
                "the text contains the invisible character {cp} (a zero-width space, joiner, soft hyphen or the like), which makes it look like another text; remove it",
                "Văn bản chứa ký tự vô hình {cp} (khoảng trắng độ rộng 0, dấu nối mềm…), khiến văn bản trông giống văn bản khác; hãy loại bỏ",
            );
            self.first_char(
                path,
                value,
                "text.private_use",
                is_private,
                "the text contains {cp}, a private-use code point or noncharacter that no other system reads the same; remove it",
                "Văn bản chứa ký tự {cp} thuộc vùng dùng riêng hoặc không phải ký tự; hãy loại bỏ",
            );
            if value.contains('\u{FFFD}') {
                self.error(
                    "text.replacement",
                    path,
                    None,
                    "the text contains U+FFFD, the mark of a character lost in a wrong encoding \
                     conversion; export the file again in UTF-8"
                        .into(),
                    "Văn bản chứa ký tự U+FFFD (ký tự bị mất do chuyển mã sai); hãy xuất lại tệp \
                     theo UTF-8"
                        .into(),
                );
            }
        }
        let nfc = match is_nfc_quick(value.chars()) {
            IsNormalized::Yes => true,
            IsNormalized::No => false,
            IsNormalized::Maybe => is_nfc(value),
        };
        if !nfc {
            self.error(
                "text.not_nfc",
                path,
                None,
                "the text is not in Unicode NFC: Vietnamese letters are written as base letter \
                 plus combining marks, so searches and comparisons miss it; convert it to NFC \
                 (precomposed letters) before sending"
                    .into(),
                "Văn bản không ở dạng chuẩn Unicode NFC (dấu tiếng Việt tách rời khỏi chữ); hãy \
                 chuyển sang dạng dựng sẵn (NFC) trước khi gửi"
                    .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::ValidationContext;

    fn codes(value: &str, kind: TextKind) -> Vec<String> {
        let ctx = ValidationContext::now();
        let mut c = Checker::new(&ctx);
        c.text_of("f", value, kind);
        c.out.into_iter().map(|v| v.code).collect()
    }

    #[test]
    fn vietnamese_text_in_nfc_passes_every_kind() {
        for kind in [TextKind::Code, TextKind::Line, TextKind::Narrative] {
            assert!(codes("Nguyễn Thị Hồng Nhung, Phường Bến Nghé", kind).is_empty());
        }
        assert!(codes("Sốt cao\n\tho nhiều\r\n", TextKind::Narrative).is_empty());
    }

    #[test]
    fn control_characters_are_refused_except_breaks_in_narrative() {
        assert_eq!(codes("Nguyễn\u{1b}[31m", TextKind::Line), ["text.control"]);
        assert_eq!(codes("a\nb", TextKind::Line), ["text.control"]);
        assert_eq!(codes("a\u{7f}", TextKind::Narrative), ["text.control"]);
        assert_eq!(codes("a\u{85}b", TextKind::Narrative), ["text.control"]);
        assert_eq!(codes("a\0b", TextKind::Narrative), ["text.nul"]);
    }

    #[test]
    fn a_control_character_is_named_with_the_rule_of_its_field() {
        let message = |value: &str, kind: TextKind| {
            let ctx = ValidationContext::now();
            let mut c = Checker::new(&ctx);
            c.text_of("f", value, kind);
            c.out.into_iter().map(|v| v.message).collect::<Vec<_>>()
        };
        let line = message("Nguyễn\u{1b}", TextKind::Line);
        assert!(
            line[0].contains("U+001B") && line[0].contains("one line"),
            "{line:?}"
        );
        let narrative = message("Sốt\u{7}", TextKind::Narrative);
        assert!(
            narrative[0].contains("U+0007") && narrative[0].contains("tab and line breaks"),
            "{narrative:?}"
        );
    }

    #[test]
    fn bidirectional_overrides_and_replacement_characters_are_refused() {
        assert_eq!(codes("5\u{202E}01 mg", TextKind::Line), ["text.bidi"]);
        assert_eq!(codes("x\u{2067}y", TextKind::Narrative), ["text.bidi"]);
        assert_eq!(codes("Nguy\u{FFFD}n", TextKind::Line), ["text.replacement"]);
    }

    #[test]
    fn invisible_and_private_use_characters_are_refused() {
        assert_eq!(codes("Nguy\u{200B}ễn", TextKind::Line), ["text.invisible"]);
        assert_eq!(codes("790\u{AD}25", TextKind::Code), ["text.invisible"]);
        assert_eq!(codes("a\u{FEFF}b", TextKind::Narrative), ["text.invisible"]);
        assert_eq!(codes("a\u{E000}b", TextKind::Line), ["text.private_use"]);
        assert_eq!(codes("a\u{FFFF}b", TextKind::Line), ["text.private_use"]);
        assert!(codes("Điều trị 3 ngày, ổn định — ½ liều", TextKind::Narrative).is_empty());
    }

    #[test]
    fn decomposed_vietnamese_is_refused_as_not_nfc() {
        // "ễ" as e + circumflex + tilde, as windows-1258 converters produce it.
        assert_eq!(
            codes("Nguye\u{302}\u{303}n", TextKind::Line),
            ["text.not_nfc"]
        );
    }

    #[test]
    fn codes_with_surrounding_space_are_refused() {
        assert_eq!(codes(" 79025", TextKind::Code), ["code.untrimmed"]);
        assert_eq!(codes("79025\u{a0}", TextKind::Code), ["code.untrimmed"]);
        assert!(codes(" tên ", TextKind::Line).is_empty());
    }
}
