//! The XML adapter the agent and the CLI share: a MoH XML export (GIAMDINHHS envelope or bare
//! table file) to lienthong events, with a precise report for whatever could not be used.

pub mod encoding;
pub mod fixtures;
pub mod mapping;
pub mod tables;
pub mod tree;

use std::collections::BTreeMap;
use std::fmt;

use lienthong_core::ClinicalEvent;
use lienthong_core::validation::{Severity, ValidationContext};

pub use tables::Table;
pub use tree::{Limits, TreeError};

use tables::Row;

/// One thing wrong in a file: where (file, episode, table, field) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File name.
    pub file: String,
    /// Episode key (MA_LK), when the problem belongs to one.
    pub episode: Option<String>,
    /// Table, when known.
    pub table: Option<Table>,
    /// Field (an XML field, or an event field path from validation).
    pub field: Option<String>,
    /// What is wrong, and what to do.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(e) = &self.episode {
            write!(f, " MA_LK={e}")?;
        }
        if let Some(t) = self.table {
            write!(f, " {}", t.as_str())?;
        }
        if let Some(field) = &self.field {
            write!(f, " {field}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// What a file gave: the events of its good episodes and the problems of the others.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    /// Events, in file order per episode.
    pub events: Vec<ClinicalEvent>,
    /// Episodes (MA_LK) converted.
    pub episodes: usize,
    /// What could not be used.
    pub problems: Vec<Problem>,
}

/// Converts one file. Err only when nothing of the file can be read (not XML, a DOCTYPE, too
/// large): then no event comes from it.
pub fn convert(
    file: &str,
    bytes: &[u8],
    limits: &Limits,
    ctx: &ValidationContext,
) -> Result<Conversion, TreeError> {
    let tables = tables::read(bytes, limits)?;
    let problem = |episode: Option<&str>,
                   table: Option<Table>,
                   field: Option<&str>,
                   reason: String| Problem {
        file: file.to_owned(),
        episode: episode.map(str::to_owned),
        table,
        field: field.map(str::to_owned),
        reason,
    };
    let mut out = Conversion::default();
    for (table, episode, reason) in &tables.problems {
        out.problems
            .push(problem(episode.as_deref(), *table, None, reason.clone()));
    }
    let facility = tables.facility.clone().unwrap_or_default();

    // Rows by episode, keeping the file's order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut episodes: BTreeMap<String, BTreeMap<Table, Vec<&Row>>> = BTreeMap::new();
    for (table, rows) in &tables.rows {
        for row in rows {
            let key = row.episode().to_owned();
            if key.is_empty() {
                out.problems.push(problem(
                    None,
                    Some(*table),
                    Some("MA_LK"),
                    "a row without its episode key".into(),
                ));
                continue;
            }
            if !episodes.contains_key(&key) {
                order.push(key.clone());
            }
            episodes
                .entry(key)
                .or_default()
                .entry(*table)
                .or_default()
                .push(row);
        }
    }

    for key in order {
        let tables_of = &episodes[&key];
        let xml1 = tables_of
            .get(&Table::Xml1)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let single = |t: Table| tables_of.get(&t).map(Vec::as_slice).unwrap_or_default();
        let xml1 = match xml1 {
            [one] => *one,
            [] => {
                out.problems.push(problem(
                    Some(&key),
                    Some(Table::Xml1),
                    None,
                    "no XML1 row for this episode: XML4, XML13 and XML14 identify the patient only through XML1; export it with the episode".into(),
                ));
                continue;
            }
            _ => {
                out.problems.push(problem(
                    Some(&key),
                    Some(Table::Xml1),
                    Some("MA_LK"),
                    format!(
                        "{} XML1 rows share this MA_LK; an episode key must be unique",
                        xml1.len()
                    ),
                ));
                continue;
            }
        };
        for t in [Table::Xml13, Table::Xml14] {
            if single(t).len() > 1 {
                out.problems.push(problem(
                    Some(&key),
                    Some(t),
                    Some("MA_LK"),
                    format!(
                        "{} {} rows share this MA_LK; one per episode",
                        single(t).len(),
                        t.as_str()
                    ),
                ));
            }
        }
        let episode_facility = xml1.get("MA_CSKCB").unwrap_or(&facility).to_owned();
        let mut field_problems = Vec::new();
        let patient = mapping::patient(xml1, &mut field_problems);
        let mut events = Vec::new();
        let mut tagged: Vec<(Table, Vec<mapping::FieldProblem>)> =
            vec![(Table::Xml1, std::mem::take(&mut field_problems))];
        if let [row] = single(Table::Xml13) {
            events.push((
                Table::Xml13,
                mapping::referral(
                    row,
                    &patient,
                    &episode_facility,
                    tables.signature.as_deref(),
                    &mut field_problems,
                ),
            ));
            tagged.push((Table::Xml13, std::mem::take(&mut field_problems)));
        }
        if let [row] = single(Table::Xml14) {
            events.push((
                Table::Xml14,
                mapping::appointment(row, &patient, &episode_facility, &mut field_problems),
            ));
            tagged.push((Table::Xml14, std::mem::take(&mut field_problems)));
        }
        let lab_rows = single(Table::Xml4);
        if !lab_rows.is_empty() {
            for e in mapping::lab_reports(
                lab_rows,
                xml1,
                &patient,
                &episode_facility,
                &mut field_problems,
            ) {
                events.push((Table::Xml4, e));
            }
            tagged.push((Table::Xml4, std::mem::take(&mut field_problems)));
        }
        let mut bad = single(Table::Xml13).len() > 1 || single(Table::Xml14).len() > 1;
        for (table, problems) in tagged {
            for (field, reason) in problems {
                bad = true;
                out.problems
                    .push(problem(Some(&key), Some(table), Some(field), reason));
            }
        }
        for (table, event) in &events {
            for v in event
                .validate(ctx)
                .into_iter()
                .filter(|v| v.severity == Severity::Error)
            {
                bad = true;
                out.problems.push(problem(
                    Some(&key),
                    Some(*table),
                    Some(&v.path),
                    v.message.clone(),
                ));
            }
        }
        if bad {
            continue;
        }
        out.episodes += 1;
        out.events.extend(events.into_iter().map(|(_, e)| e));
    }
    Ok(out)
}
