//! The feature registry: every column of the feature table with its group,
//! type, description and source file. The SQL file that computes a feature
//! declares it in a `-- feature: <name> <Arrow type>: <description>` line,
//! so the registry lives next to the SQL; a test checks it against the
//! table the SQL really produces, and `docs/features.md` carries the table
//! this module renders.

use crate::sql::{FEATURES, SqlFile};

/// One registered feature.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Feature {
    pub name: String,
    /// The feature group: the SQL file's name (`value`, `engagement`, ...).
    pub group: String,
    /// The Arrow type of the column (`Int64`, `Float64`, `Utf8`, ...).
    pub data_type: String,
    /// For a categorical (text) feature, its values, declared as
    /// `Utf8{a,b,c}`: models see one 0/1 column per value.
    pub categories: Vec<String>,
    pub description: String,
    /// The SQL file under `sql/`.
    pub source: &'static str,
}

const MARK: &str = "-- feature: ";

/// Every registered feature, in feature-table column order.
pub fn features() -> Vec<Feature> {
    FEATURES.iter().flat_map(parse).collect()
}

/// The registered feature `name`.
pub fn feature(name: &str) -> Option<Feature> {
    features().into_iter().find(|f| f.name == name)
}

impl Feature {
    /// The description, with a categorical feature's values.
    pub fn full_description(&self) -> String {
        if self.categories.is_empty() {
            return self.description.clone();
        }
        let values: Vec<String> = self.categories.iter().map(|c| format!("`{c}`")).collect();
        format!("{} (one of {})", self.description, values.join(", "))
    }
}

fn parse(file: &SqlFile) -> Vec<Feature> {
    let group = file.path.rsplit('/').next().unwrap_or(file.path).trim_end_matches(".sql").to_string();
    file.sql
        .lines()
        .filter_map(|l| l.strip_prefix(MARK))
        .map(|rest| {
            let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let (data_type, description) = rest.split_once(": ").unwrap_or((rest, ""));
            let (data_type, categories) = match data_type.split_once('{') {
                Some((ty, values)) => {
                    (ty, values.trim_end_matches('}').split(',').map(|v| v.trim().to_string()).collect())
                }
                None => (data_type, Vec::new()),
            };
            Feature {
                name: name.into(),
                group: group.clone(),
                data_type: data_type.into(),
                categories,
                description: description.into(),
                source: file.path,
            }
        })
        .collect()
}

/// The registry as a Markdown table (the generated part of docs/features.md).
pub fn markdown(features: &[Feature]) -> String {
    let mut out = String::from("| feature | type | group | description |\n| --- | --- | --- | --- |\n");
    for f in features {
        out.push_str(&format!(
            "| `{}` | {} | [{}](../sql/{}) | {} |\n",
            f.name,
            f.data_type,
            f.group,
            f.source,
            f.full_description()
        ));
    }
    out
}

/// The registry as aligned text (`engage features list`).
pub fn text(features: &[Feature]) -> String {
    let width = |get: fn(&Feature) -> usize| features.iter().map(get).max().unwrap_or(0);
    let (wn, wt, wg) = (width(|f| f.name.len()), width(|f| f.data_type.len()), width(|f| f.group.len()));
    let mut out = String::new();
    for f in features {
        out.push_str(&format!(
            "{:<wn$}  {:<wt$}  {:<wg$}  {}\n",
            f.name,
            f.data_type,
            f.group,
            f.full_description()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_has_a_type_and_a_description() {
        let all = features();
        assert!(all.len() >= 20);
        for f in &all {
            assert!(!f.data_type.is_empty() && !f.description.is_empty(), "{f:?}");
        }
        let mut names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "a feature is registered twice");
    }
}
