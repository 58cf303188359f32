//! From a file to table rows: a GIAMDINHHS envelope (FILEHOSO entries whose NOIDUNGFILE is a
//! base64 inner table) or a bare table file. Rows are found by meaning, not by tag name: any
//! element whose children are leaves and include MA_LK is a row, so vendors' different root
//! and row wrappers all work.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::tree::{Element, Limits, TreeError, parse};

/// The tables lienthong reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// XML1, episode summary (the patient's identity).
    Xml1,
    /// XML4, para-clinical results.
    Xml4,
    /// XML13, referral slip.
    Xml13,
    /// XML14, follow-up appointment slip.
    Xml14,
}

impl Table {
    /// `XML1`, `XML4`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xml1 => "XML1",
            Self::Xml4 => "XML4",
            Self::Xml13 => "XML13",
            Self::Xml14 => "XML14",
        }
    }

    fn from_loaihoso(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "XML1" => Some(Self::Xml1),
            "XML4" => Some(Self::Xml4),
            "XML13" => Some(Self::Xml13),
            "XML14" => Some(Self::Xml14),
            _ => None,
        }
    }

    /// Recognizes a bare table's row by the fields only that table has.
    fn of_row(row: &Row) -> Option<Self> {
        let has = |f: &str| row.fields.contains_key(f);
        if has("GIAY_CHUYEN_TUYEN") && (has("MA_LYDO_CT") || has("QT_BENHLY")) {
            Some(Self::Xml13)
        } else if has("SO_GIAYHEN_KL") || has("NGAY_HEN_KL") {
            Some(Self::Xml14)
        } else if has("MA_CHI_SO") || (has("MA_DICH_VU") && has("NGAY_KQ")) {
            Some(Self::Xml4)
        } else if has("HO_TEN") && (has("SO_CCCD") || has("MA_THE_BHYT")) {
            Some(Self::Xml1)
        } else {
            None
        }
    }
}

/// One row: field name (upper case) → trimmed text (empty elements are absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// Fields.
    pub fields: BTreeMap<String, String>,
}

impl Row {
    /// A field's text, None when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The episode key.
    pub fn episode(&self) -> &str {
        self.get("MA_LK").unwrap_or("")
    }
}

/// The rows of one file, by table, plus the facility of the envelope and its signature.
#[derive(Debug, Clone, Default)]
pub struct FileTables {
    /// The envelope's MACSKCB, when there is an envelope.
    pub facility: Option<String>,
    /// The envelope's CHUKYDONVI (the facility signature), carried through untouched.
    pub signature: Option<String>,
    /// Rows by table.
    pub rows: BTreeMap<Table, Vec<Row>>,
    /// Entries that could not be read: (table, MA_LK if known, reason).
    pub problems: Vec<(Option<Table>, Option<String>, String)>,
}

fn rows_in(root: &Element) -> Vec<Row> {
    root.descendants()
        .into_iter()
        .filter(|e| !e.is_leaf() && e.children.iter().all(Element::is_leaf))
        .filter(|e| {
            e.children
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case("MA_LK"))
        })
        .map(|e| Row {
            fields: e
                .children
                .iter()
                .filter(|c| !c.text.is_empty())
                .map(|c| (c.name.to_ascii_uppercase(), c.text.clone()))
                .collect(),
        })
        .collect()
}

/// The rows of the tables in one HOSO (or a whole file without HOSO), and the tables that
/// could not be read with why.
#[allow(clippy::type_complexity)]
fn read_group(group: &Element, limits: &Limits) -> (Vec<(Table, Vec<Row>)>, Vec<(Table, String)>) {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for file in group
        .descendants()
        .into_iter()
        .filter(|e| e.name.eq_ignore_ascii_case("FILEHOSO"))
    {
        let kind = file
            .child("LOAIHOSO")
            .map(|e| e.text.as_str())
            .unwrap_or("");
        let Some(table) = Table::from_loaihoso(kind) else {
            // XML2, XML3, XML5… are not lienthong's business.
            continue;
        };
        let content = file
            .child("NOIDUNGFILE")
            .map(|e| e.text.as_str())
            .unwrap_or("");
        let cleaned: String = content.chars().filter(|c| !c.is_whitespace()).collect();
        let inner = match base64::engine::general_purpose::STANDARD.decode(cleaned.as_bytes()) {
            Ok(b) => b,
            Err(e) => {
                failures.push((
                    table,
                    format!("NOIDUNGFILE is not valid base64 ({e}); re-export the file"),
                ));
                continue;
            }
        };
        // The inner table may be in any encoding it declares: `parse` decodes it.
        match parse(&inner, limits) {
            Ok(t) => {
                let found = rows_in(&t);
                if found.is_empty() {
                    failures.push((table, "the inner table holds no row with MA_LK".into()));
                }
                rows.push((table, found));
            }
            Err(e) => failures.push((table, format!("the inner table: {e}"))),
        }
    }
    (rows, failures)
}

/// Reads the tables of a file: a GIAMDINHHS envelope or a bare table file.
pub fn read(bytes: &[u8], limits: &Limits) -> Result<FileTables, TreeError> {
    let root = parse(bytes, limits)?;
    let mut out = FileTables::default();
    if !root.name.eq_ignore_ascii_case("GIAMDINHHS") {
        for row in rows_in(&root) {
            match Table::of_row(&row) {
                Some(t) => out.rows.entry(t).or_default().push(row),
                None => out.problems.push((
                    None,
                    row.get("MA_LK").map(str::to_owned),
                    "a row with MA_LK that is none of XML1, XML4, XML13, XML14".into(),
                )),
            }
        }
        return Ok(out);
    }
    out.facility = root
        .descendants()
        .into_iter()
        .find(|e| e.name.eq_ignore_ascii_case("MACSKCB"))
        .map(|e| e.text.clone())
        .filter(|t| !t.is_empty());
    out.signature = root
        .child("CHUKYDONVI")
        .map(|e| e.text.clone())
        .filter(|t| !t.is_empty());
    // A HOSO is one episode's files: if one of them cannot be read, none of them is used, so
    // a referral never arrives without its lab results.
    let mut groups: Vec<&Element> = root
        .descendants()
        .into_iter()
        .filter(|e| e.name.eq_ignore_ascii_case("HOSO"))
        .collect();
    if groups.is_empty() {
        groups.push(&root);
    }
    for group in groups {
        let (rows, failures) = read_group(group, limits);
        if failures.is_empty() {
            for (table, rows) in rows {
                out.rows.entry(table).or_default().extend(rows);
            }
            continue;
        }
        let mut keys: Vec<String> = rows
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|r| r.episode().to_owned()))
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        for (table, reason) in failures {
            let held = "; nothing of the episode is sent until it is exported whole";
            if keys.is_empty() {
                out.problems
                    .push((Some(table), None, format!("{reason}{held}")));
            }
            for key in &keys {
                out.problems
                    .push((Some(table), Some(key.clone()), format!("{reason}{held}")));
            }
        }
    }
    Ok(out)
}
