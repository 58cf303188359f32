//! The chart README's table of values, generated from the comments in `values.yaml`: the
//! comment block right above a key describes it, and its default is what the file sets. A key
//! holding a non-empty mapping is a group (a row only when it has a comment) whose keys get
//! rows of their own; lists, scalars and empty or flow mappings are one row each.

use serde_yaml::Value;

/// One documented value.
#[derive(Debug, PartialEq, Eq)]
pub struct ValueRow {
    /// Dotted path, for example `gateway.service.type`.
    pub key: String,
    /// The default as the chart sets it (JSON for lists and mappings); empty for a group.
    pub default: String,
    /// The comment above the key, joined into one line.
    pub description: String,
}

/// The rows of `values.yaml`, in file order.
pub fn value_rows(values_yaml: &str) -> Result<Vec<ValueRow>, String> {
    let root: Value = serde_yaml::from_str(values_yaml).map_err(|e| format!("values.yaml: {e}"))?;
    let mut rows = Vec::new();
    let mut comment: Vec<String> = Vec::new();
    // (indent, key) of the groups the current line is inside.
    let mut groups: Vec<(usize, String)> = Vec::new();
    // Lines deeper than this belong to the last row's value (a list, a block scalar).
    let mut inside_value: Option<usize> = None;
    for (number, line) in values_yaml.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if inside_value.is_some_and(|at| text.is_empty() || indent > at) {
            continue;
        }
        inside_value = None;
        if text.is_empty() {
            comment.clear();
            continue;
        }
        if let Some(rest) = text.strip_prefix('#') {
            comment.push(rest.trim().to_owned());
            continue;
        }
        let Some((key, _)) = text.split_once(':') else {
            return Err(format!(
                "values.yaml line {}: expected `key: value`",
                number + 1
            ));
        };
        let key = key.trim().trim_matches('"').to_owned();
        while groups.last().is_some_and(|(at, _)| *at >= indent) {
            groups.pop();
        }
        let mut path: Vec<String> = groups.iter().map(|(_, k)| k.clone()).collect();
        path.push(key.clone());
        let value = path
            .iter()
            .try_fold(&root, |node, k| node.get(k.as_str()))
            .ok_or_else(|| {
                format!(
                    "values.yaml line {}: {} not found",
                    number + 1,
                    path.join(".")
                )
            })?;
        let description = comment.join(" ");
        comment.clear();
        let group = matches!(value, Value::Mapping(m) if !m.is_empty()) && text.ends_with(':');
        if group {
            if !description.is_empty() {
                rows.push(ValueRow {
                    key: path.join("."),
                    default: String::new(),
                    description,
                });
            }
            groups.push((indent, key));
        } else {
            rows.push(ValueRow {
                key: path.join("."),
                default: default_of(value)?,
                description,
            });
            inside_value = Some(indent);
        }
    }
    Ok(rows)
}

fn default_of(value: &Value) -> Result<String, String> {
    Ok(match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_json::to_string(other).map_err(|e| format!("default: {e}"))?,
    })
}

/// The Markdown table of `values.yaml`.
pub fn values_table(values_yaml: &str) -> Result<String, String> {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from("| Key | Default | Description |\n|---|---|---|\n");
    for row in value_rows(values_yaml)? {
        let default = if row.default.is_empty() {
            String::new()
        } else {
            format!("`{}`", cell(&row.default))
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            row.key,
            default,
            cell(&row.description)
        ));
    }
    Ok(out)
}

/// Where the generated table sits in the chart README.
pub const BEGIN: &str = "<!-- values: generated from values.yaml, do not edit by hand -->";
/// The end of the generated table.
pub const END: &str = "<!-- end of values -->";

/// `readme` with the table between [`BEGIN`] and [`END`] replaced by a fresh one.
pub fn with_fresh_table(readme: &str, values_yaml: &str) -> Result<String, String> {
    let start = readme
        .find(BEGIN)
        .ok_or("the chart README has no values marker")?
        + BEGIN.len();
    let end = readme[start..]
        .find(END)
        .ok_or("the chart README has no end-of-values marker")?
        + start;
    Ok(format!(
        "{}\n{}{}",
        &readme[..start],
        values_table(values_yaml)?,
        &readme[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: &str = r#"# File header, not about any key.

# The image.
image:
  repository: example/lienthong
  # Defaults to the chart's appVersion.
  tag: ""
list:
  - code: "79"
    # inside the list
    replicas: 1
resources:
  requests: {cpu: 50m}
# A group with a comment.
group:
  inner:
    leaf: true
"#;

    #[test]
    fn comments_above_a_key_describe_it_and_lists_are_one_row() {
        let rows = value_rows(VALUES).unwrap();
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "image",
                "image.repository",
                "image.tag",
                "list",
                "resources.requests",
                "group",
                "group.inner.leaf"
            ]
        );
        assert_eq!(rows[0].description, "The image.");
        assert_eq!(rows[1].description, "");
        assert_eq!(rows[2].default, "\"\"");
        assert_eq!(rows[2].description, "Defaults to the chart's appVersion.");
        assert_eq!(rows[3].default, r#"[{"code":"79","replicas":1}]"#);
        assert_eq!(rows[4].default, r#"{"cpu":"50m"}"#);
        assert_eq!(rows[6].default, "true");
    }

    #[test]
    fn the_table_escapes_pipes_and_the_markers_frame_it() {
        let values = "# a | b\nx: \"1|2\"\n";
        let table = values_table(values).unwrap();
        assert!(table.contains(r"| `x` | `1\|2` | a \| b |"), "{table}");
        let readme = format!("intro\n{BEGIN}\nstale\n{END}\nafter\n");
        let fresh = with_fresh_table(&readme, values).unwrap();
        assert!(fresh.starts_with("intro\n") && fresh.ends_with(&format!("{END}\nafter\n")));
        assert!(!fresh.contains("stale"));
        assert!(with_fresh_table("no markers", values).is_err());
    }
}
