//! Prompt lists for RLHF and evaluation: `.txt` (one per line, `#` comments), `.jsonl` (a field
//! per line: `prompt`, else `text`, or the one named), `.csv` with a header (DrawBench's
//! `Prompts` column, else `prompt` / `text`, or the one named; RFC 4180 quoting).

use std::path::Path;

use crate::{DataError, Skipped};

/// Reads the prompts of `path` by its extension; `field` names the JSON key or CSV column.
/// Rows without a usable prompt are skipped and counted.
pub fn load_prompts(path: &Path, field: Option<&str>) -> Result<(Vec<String>, Skipped), DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut skipped = Skipped::default();
    let prompts: Vec<String> = match ext.as_str() {
        "txt" => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        "jsonl" => {
            let keys: Vec<&str> = match field {
                Some(f) => vec![f],
                None => vec!["prompt", "text", "caption"],
            };
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .filter_map(|(i, l)| {
                    let row = serde_json::from_str::<serde_json::Value>(l).ok();
                    let prompt = row
                        .as_ref()
                        .and_then(|r| keys.iter().find_map(|k| r[*k].as_str().map(str::to_string)));
                    match prompt.filter(|p| !p.trim().is_empty()) {
                        Some(p) => Some(p),
                        None => {
                            skipped.add(format!("line {}: no {} string", i + 1, keys.join(" / ")));
                            None
                        }
                    }
                })
                .collect()
        }
        "csv" => {
            let mut rows = parse_csv(&text).into_iter();
            let header = rows.next().ok_or_else(|| DataError::Invalid {
                path: path.to_path_buf(),
                message: "empty CSV (a header row is required)".into(),
            })?;
            let wanted: Vec<&str> = match field {
                Some(f) => vec![f],
                None => vec!["Prompts", "prompt", "text"],
            };
            let column = wanted
                .iter()
                .find_map(|w| header.iter().position(|h| h.trim() == *w))
                .ok_or_else(|| DataError::Invalid {
                    path: path.to_path_buf(),
                    message: format!(
                        "no column named {} (header: {header:?})",
                        wanted.join(" / ")
                    ),
                })?;
            rows.enumerate()
                .filter_map(|(i, row)| match row.get(column).map(|p| p.trim()) {
                    Some(p) if !p.is_empty() => Some(p.to_string()),
                    _ => {
                        skipped.add(format!("row {}: empty prompt", i + 2));
                        None
                    }
                })
                .collect()
        }
        other => {
            return Err(DataError::Invalid {
                path: path.to_path_buf(),
                message: format!("unknown prompt-list extension `.{other}` (txt, jsonl or csv)"),
            })
        }
    };
    if prompts.is_empty() {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            message: "no prompts".into(),
        });
    }
    if skipped.count > 0 {
        tracing::warn!(file = %path.display(), skipped = skipped.count, "prompt rows skipped");
    }
    Ok((prompts, skipped))
}

/// RFC 4180 CSV: quoted fields may hold commas, newlines and doubled quotes.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        let rows =
            parse_csv("Prompts,Category\n\"a, b\",x\n\"say \"\"hi\"\"\nthere\",y\r\nplain,z");
        assert_eq!(rows[1], ["a, b", "x"]);
        assert_eq!(rows[2], ["say \"hi\"\nthere", "y"]);
        assert_eq!(rows[3], ["plain", "z"]);
    }
}
