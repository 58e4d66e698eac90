//! Printing records: `--format table|json|ndjson|csv`.
//!
//! A record is an ordered list of (column, JSON value). Tables and CSV flatten values to text;
//! JSON and NDJSON keep types. Everything goes to an injected writer so commands are testable.

use std::io::{self, Write};

use serde_json::{Map, Value};

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// One flat record.
pub type Record = Map<String, Value>;

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn columns(records: &[Record]) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    for r in records {
        for k in r.keys() {
            if !cols.iter().any(|c| c == k) {
                cols.push(k.clone());
            }
        }
    }
    cols
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Table cells are one line each and bounded, so one long description cannot wreck the layout.
fn table_cell(value: &Value) -> String {
    const MAX: usize = 60;
    let text: String = cell(value)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Writes `records` in `format`.
pub fn write_records(out: &mut dyn Write, format: Format, records: &[Record]) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, records)?;
            writeln!(out)
        }
        Format::Ndjson => {
            for r in records {
                serde_json::to_writer(&mut *out, r)?;
                writeln!(out)?;
            }
            Ok(())
        }
        Format::Csv => {
            let cols = columns(records);
            writeln!(
                out,
                "{}",
                cols.iter()
                    .map(|c| csv_field(c))
                    .collect::<Vec<_>>()
                    .join(",")
            )?;
            for r in records {
                let row: Vec<String> = cols
                    .iter()
                    .map(|c| csv_field(&r.get(c).map(cell).unwrap_or_default()))
                    .collect();
                writeln!(out, "{}", row.join(","))?;
            }
            Ok(())
        }
        Format::Table => {
            let cols = columns(records);
            if cols.is_empty() {
                return writeln!(out, "(no records)");
            }
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| {
                    cols.iter()
                        .map(|c| r.get(c).map(table_cell).unwrap_or_default())
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([c.chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| -> String {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            writeln!(out, "{}", line(&cols))?;
            for r in &rows {
                writeln!(out, "{}", line(r))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn records() -> Vec<Record> {
        vec![
            json!({"id": 1, "name": "a, \"b\"", "tags": ["x", "y"]})
                .as_object()
                .cloned()
                .expect("object"),
            json!({"id": 22, "name": null, "extra": true})
                .as_object()
                .cloned()
                .expect("object"),
        ]
    }

    fn render(format: Format) -> String {
        let mut buf = Vec::new();
        write_records(&mut buf, format, &records()).expect("writes");
        String::from_utf8(buf).expect("utf8")
    }

    #[test]
    fn csv_quotes_and_unions_columns() {
        assert_eq!(
            render(Format::Csv),
            "id,name,tags,extra\n1,\"a, \"\"b\"\"\",\"x, y\",\n22,,,true\n"
        );
    }

    #[test]
    fn ndjson_keeps_types() {
        let text = render(Format::Ndjson);
        let first: Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        assert_eq!(first["tags"], json!(["x", "y"]));
    }

    #[test]
    fn table_aligns() {
        let text = render(Format::Table);
        let lines: Vec<&str> = text.lines().collect();
        // Widths: id 2, name 6 (`a, "b"`), tags 4 (`x, y`), extra 5.
        assert_eq!(lines[0], "id  name    tags  extra");
        assert_eq!(lines[1], "1   a, \"b\"  x, y");
        assert_eq!(lines[2], "22                true");
    }
}
