//! Tables for people: every column as wide as its widest cell (measured in terminal columns,
//! so Vietnamese names line up), numbers aligned right, and no cell able to move the cursor.

use lienthong_core::printable::printable;
use unicode_width::UnicodeWidthStr;

/// How a column's cells sit in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table printed once all its rows are known.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.columns.len())
            .map(|c| printable(c.as_ref()).into_owned())
            .collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// How many rows it holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The table as text, one line per row after the heading, each ending in a line feed.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (heading, _))| {
                self.rows
                    .iter()
                    .map(|r| r[i].width())
                    .chain([heading.width()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let headings: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        for cells in std::iter::once(&headings).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = " ".repeat(widths[i] - cell.width());
                if i > 0 {
                    line.push_str("  ");
                }
                match self.columns[i].1 {
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_numbers_align_right() {
        let mut t = Table::new(&[
            ("TOPIC", Align::Left),
            ("PARTITIONS", Align::Right),
            ("NAME", Align::Left),
        ]);
        t.row([
            "lienthong.lab-result.v1-a-very-long-topic-name",
            "12",
            "Nguyễn Thị Ánh Tuyết",
        ]);
        t.row(["short", "3", "An"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // The third column starts at the same terminal column on every line.
        let starts: Vec<usize> = lines
            .iter()
            .map(|l| {
                let cut = l.rfind("  ").expect("separator") + 2;
                l[..cut].width()
            })
            .collect();
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(lines[2].contains("         3  An"), "{text}");
        assert!(
            !text.lines().any(|l| l.ends_with(' ')),
            "no trailing blanks: {text:?}"
        );
    }

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        let mut t = Table::new(&[("NAME", Align::Left), ("X", Align::Left)]);
        t.row(["Lê\u{1b}[2JVăn\nTám\u{202e}", "1"]);
        let text = t.render();
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
    }

    #[test]
    fn missing_cells_are_empty_and_extra_cells_dropped() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(["1"]);
        t.row(["1", "2", "3"]);
        assert_eq!(t.render(), "A  B\n1\n1  2\n");
    }
}
