//! A small, bounded XML element tree. Safe against hostile input: a document type declaration
//! (where entity expansion and external entities live) is refused outright, only the five
//! predefined entities and character references are decoded, and depth, element count and
//! text size are capped.

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// Caps that keep a hostile or broken file from exhausting memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_file_bytes: usize,
    /// Deepest element nesting.
    pub max_depth: usize,
    /// Most elements in one document.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 64 * 1024 * 1024,
            max_depth: 32,
            max_elements: 2_000_000,
        }
    }
}

/// An element: its tag name, its text (trimmed, entities decoded) and its children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    /// Tag name, without namespace prefix.
    pub name: String,
    /// Concatenated text content.
    pub text: String,
    /// Child elements, in order.
    pub children: Vec<Element>,
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// Bigger than the limit.
    #[error("the file is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// Size.
        size: usize,
        /// Limit.
        limit: usize,
    },
    /// A DOCTYPE (entity definitions) was present.
    #[error(
        "the file declares a DOCTYPE; entity definitions and external entities are refused (export the tables without one)"
    )]
    DocType,
    /// Nested too deeply or too many elements.
    #[error("the XML nests deeper than {0} levels or holds too many elements")]
    TooComplex(usize),
    /// Not well-formed.
    #[error("not well-formed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset.
        position: u64,
        /// What the parser said.
        message: String,
    },
    /// No root element.
    #[error("the file holds no XML element")]
    Empty,
    /// The bytes are not exactly decodable text.
    #[error(transparent)]
    Encoding(#[from] super::encoding::EncodingError),
}

fn local_name(raw: &[u8]) -> String {
    let name = raw.rsplit(|b| *b == b':').next().unwrap_or(raw);
    String::from_utf8_lossy(name).trim().to_owned()
}

/// Parses a whole document (in its declared encoding or by its byte-order mark) into its
/// root element; texts are NFC.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Element, TreeError> {
    if bytes.len() > limits.max_file_bytes {
        return Err(TreeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_file_bytes,
        });
    }
    let text = super::encoding::decode(bytes)?;
    let mut reader = Reader::from_str(&text);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let malformed = |reader: &Reader<&[u8]>, message: String| TreeError::Malformed {
        position: reader.buffer_position(),
        message,
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(&reader, e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(TreeError::DocType),
            // The declared encoding has been honoured by `decode`.
            Event::Decl(_) => {}
            Event::Start(e) => {
                count += 1;
                if stack.len() >= limits.max_depth || count > limits.max_elements {
                    return Err(TreeError::TooComplex(limits.max_depth));
                }
                stack.push(Element {
                    name: local_name(e.name().as_ref()),
                    ..Element::default()
                });
            }
            Event::Empty(e) => {
                count += 1;
                if count > limits.max_elements {
                    return Err(TreeError::TooComplex(limits.max_depth));
                }
                let el = Element {
                    name: local_name(e.name().as_ref()),
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = root.or(Some(el)),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let text = t.decode().map_err(|e| malformed(&reader, e.to_string()))?;
                    let text = quick_xml::escape::unescape(&text)
                        .map_err(|e| malformed(&reader, e.to_string()))?;
                    top.text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                // Only the predefined entities and character references exist here.
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                let reference = format!("&{name};");
                let resolved = quick_xml::escape::unescape(&reference)
                    .map_err(|_| malformed(&reader, format!("unknown entity {reference}")))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(c.as_ref()));
                }
            }
            Event::End(_) => {
                let mut done = stack
                    .pop()
                    .ok_or_else(|| malformed(&reader, "unexpected closing tag".into()))?;
                done.text = done.text.trim().to_owned();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = root.or(Some(done)),
                }
            }
            Event::Eof => break,
            Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(malformed(
            &reader,
            "the document ends inside an element (truncated?)".into(),
        ));
    }
    root.ok_or(TreeError::Empty)
}

impl Element {
    /// The first child with this tag name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// True when the element has no child elements.
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }

    /// Every element below (and including) this one, depth first.
    pub fn descendants(&self) -> Vec<&Element> {
        let mut out = vec![self];
        let mut i = 0;
        while i < out.len() {
            let e = out[i];
            out.extend(e.children.iter());
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_encodings_are_honoured_and_undecodable_bytes_refused() {
        let l = Limits::default();
        let mut cp1258 = b"<?xml version=\"1.0\" encoding=\"windows-1258\"?><A>Nguy".to_vec();
        cp1258.extend_from_slice(b"\xEA\xDEn</A>");
        assert_eq!(parse(&cp1258, &l).expect("windows-1258").text, "Nguyễn");
        let utf16: Vec<u8> = "\u{feff}<A>Nguyễn</A>"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(parse(&utf16, &l).expect("UTF-16 with BOM").text, "Nguyễn");
        let undeclared = b"<A>Nguy\xEA\xDEn</A>";
        let err = parse(undeclared, &l).unwrap_err().to_string();
        assert!(err.contains("not valid UTF-8 from byte 7"), "{err}");
        let upper = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><A>Nguyễn</A>";
        assert_eq!(parse(upper.as_bytes(), &l).expect("utf-8").text, "Nguyễn");
    }

    #[test]
    fn text_is_trimmed_and_entities_decoded_with_diacritics_and_bom() {
        let doc = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><A><B>  Nguyễn &amp; Lê  </B><C/></A>";
        let root = parse(doc.as_bytes(), &Limits::default()).expect("parses");
        assert_eq!(root.name, "A");
        assert_eq!(
            root.child("B").map(|b| b.text.as_str()),
            Some("Nguyễn & Lê")
        );
        assert!(root.child("C").is_some_and(Element::is_leaf));
    }

    #[test]
    fn a_doctype_is_refused_so_no_entity_bomb_can_expand() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><A>&lol2;</A>"#;
        assert_eq!(
            parse(bomb.as_bytes(), &Limits::default()),
            Err(TreeError::DocType)
        );
        let external = r#"<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>"#;
        assert_eq!(
            parse(external.as_bytes(), &Limits::default()),
            Err(TreeError::DocType)
        );
    }

    #[test]
    fn limits_and_truncation_give_precise_errors() {
        let small = Limits {
            max_file_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse(b"<A>0123456789</A>", &small),
            Err(TreeError::TooLarge {
                size: 17,
                limit: 10
            })
        ));
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert_eq!(
            parse(deep.as_bytes(), &Limits::default()),
            Err(TreeError::TooComplex(32))
        );
        assert!(matches!(
            parse(b"<A><B>x</B>", &Limits::default()),
            Err(TreeError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"<A>&nope;</A>", &Limits::default()),
            Err(TreeError::Malformed { .. })
        ));
    }
}
