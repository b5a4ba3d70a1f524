//! The grid of a sweep: which recipe keys take which values. It comes from
//! `--grid KEY=V1,V2` arguments and a recipe's `sweep:` section; its points
//! are the cartesian product, first axis slowest, so runs happen in the
//! order a reader of the command line expects.
//!
//! Only the spelling is checked here (a key, at least one value, each value
//! YAML). Whether a key exists and a value has the right type is the
//! recipe's business: the plan loads the recipe with every value before any
//! run starts.

use serde_yaml_ng::{Mapping, Value};

/// A grid that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{source_text}: {message}")]
pub struct GridError {
    /// Where the spec came from: `--grid beta=...` or `FILE: sweep.beta`.
    pub source_text: String,
    pub message: String,
}

/// One swept key and its values, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// A recipe key as `--set` takes it: `beta`, `dpo.beta`, `dataset_mixture.seed`.
    pub key: String,
    pub values: Vec<Value>,
}

/// Every axis of a sweep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grid {
    pub axes: Vec<Axis>,
}

/// One point of the grid: the index of its value on each axis.
pub type Point = Vec<usize>;

impl Grid {
    /// Parses `--grid` arguments.
    pub fn from_specs(specs: &[String]) -> Result<Grid, GridError> {
        let mut grid = Grid::default();
        for spec in specs {
            grid.add(parse_spec(spec)?, &format!("--grid `{spec}`"))?;
        }
        Ok(grid)
    }

    /// Reads a recipe's `sweep:` mapping (`KEY: [V1, V2]`, nested keys
    /// dotted). `origin` names the file for errors.
    pub fn from_section(section: &Mapping, origin: &str) -> Result<Grid, GridError> {
        let mut grid = Grid::default();
        for (key, values) in section {
            let key = key.as_str().unwrap_or_default().to_string();
            let where_ = format!("{origin}: sweep.{key}");
            let bad = |message: &str| GridError {
                source_text: where_.clone(),
                message: message.to_string(),
            };
            check_key(&key).map_err(|m| bad(&m))?;
            let Value::Sequence(values) = values else {
                return Err(bad(
                    "expected a list of values, such as [0.01, 0.1] (nested keys are written with dots: dpo.beta)",
                ));
            };
            let axis = Axis {
                key,
                values: values.clone(),
            };
            check_values(&axis).map_err(|m| bad(&m))?;
            grid.add(axis, &where_)?;
        }
        Ok(grid)
    }

    /// `other`'s axes replace axes of the same key and come after the rest:
    /// the command line overrides the recipe's `sweep:` section.
    pub fn merged_with(mut self, other: Grid) -> Grid {
        for axis in other.axes {
            self.axes.retain(|a| a.key != axis.key);
            self.axes.push(axis);
        }
        self
    }

    fn add(&mut self, axis: Axis, origin: &str) -> Result<(), GridError> {
        if self.axes.iter().any(|a| a.key == axis.key) {
            return Err(GridError {
                source_text: origin.to_string(),
                message: format!("`{}` is swept twice", axis.key),
            });
        }
        self.axes.push(axis);
        Ok(())
    }

    /// The cartesian product of the axes, first axis slowest.
    pub fn points(&self) -> Vec<Point> {
        let mut points: Vec<Point> = vec![Vec::new()];
        for axis in &self.axes {
            points = points
                .into_iter()
                .flat_map(|p| {
                    (0..axis.values.len()).map(move |i| {
                        let mut next = p.clone();
                        next.push(i);
                        next
                    })
                })
                .collect();
        }
        points
    }

    /// The `--set` arguments that put `point` into a recipe.
    pub fn overrides(&self, point: &Point) -> Vec<String> {
        self.axes
            .iter()
            .zip(point)
            .map(|(axis, &i)| format!("{}={}", axis.key, flow(&axis.values[i])))
            .collect()
    }

    /// A folder name for `point` on the axes `keep` (indices):
    /// `key=value,key=value`, with characters no file system takes replaced.
    pub fn folder_name(&self, point: &Point, keep: &[usize]) -> String {
        let parts: Vec<String> = keep
            .iter()
            .map(|&a| {
                let axis = &self.axes[a];
                format!("{}={}", axis.key, flow(&axis.values[point[a]]))
            })
            .collect();
        portable(&parts.join(","))
    }
}

/// `KEY=V1,V2,...`: commas inside brackets, braces or quotes belong to a value.
fn parse_spec(spec: &str) -> Result<Axis, GridError> {
    let bad = |message: String| GridError {
        source_text: format!("--grid `{spec}`"),
        message,
    };
    let (key, values) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=V1,V2,...".into()))?;
    let key = key.trim().to_string();
    check_key(&key).map_err(bad)?;
    if values.trim().is_empty() {
        return Err(bad(format!(
            "no values for `{key}`: expected {key}=V1,V2,..."
        )));
    }
    let mut parsed = Vec::new();
    for (index, text) in split_values(values).iter().enumerate() {
        let text = text.trim();
        if text.is_empty() {
            return Err(bad(format!("value {} is empty", index + 1)));
        }
        let value: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| bad(format!("value `{text}` is not valid YAML: {e}")))?;
        parsed.push(value);
    }
    let axis = Axis {
        key,
        values: parsed,
    };
    check_values(&axis).map_err(bad)?;
    Ok(axis)
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!("`{key}` is not a recipe key"));
    }
    Ok(())
}

/// At least one value, none twice (two runs of one recipe compare nothing).
fn check_values(axis: &Axis) -> Result<(), String> {
    if axis.values.is_empty() {
        return Err(format!("no values for `{}`", axis.key));
    }
    for (i, value) in axis.values.iter().enumerate() {
        if axis.values[..i].contains(value) {
            return Err(format!("value `{}` is given twice", flow(value)));
        }
    }
    Ok(())
}

/// Splits at commas outside `[]`, `{}` and quotes.
fn split_values(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("starts with one part").push(c);
    }
    parts
}

/// A value on one line, as YAML reads it back (`0.1`, `sigmoid`, `'1'`,
/// `[a, b]`).
pub fn flow(value: &Value) -> String {
    match value {
        Value::Sequence(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Mapping(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", flow(k), flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Tagged(tagged) => flow(&tagged.value),
        scalar => serde_yaml_ng::to_string(scalar)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Replaces what Windows, macOS or Linux would refuse in a file name, and
/// spaces (shells).
fn portable(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_are_yaml_and_commas_in_brackets_stay() {
        let grid = Grid::from_specs(&specs(&["beta=0.01,0.1", "loss_type=[sigmoid,sft],ipo"]))
            .expect("parses");
        assert_eq!(
            grid.axes[0].values,
            vec![Value::from(0.01), Value::from(0.1)]
        );
        assert_eq!(grid.axes[1].values.len(), 2);
        assert_eq!(flow(&grid.axes[1].values[0]), "[sigmoid, sft]");
    }

    #[test]
    fn points_are_the_product_first_axis_slowest() {
        let grid = Grid::from_specs(&specs(&["a=1,2", "b=x,y,z"])).expect("parses");
        let points = grid.points();
        assert_eq!(points.len(), 6);
        assert_eq!(points[0], vec![0, 0]);
        assert_eq!(points[1], vec![0, 1]);
        assert_eq!(points[3], vec![1, 0]);
        assert_eq!(grid.overrides(&points[5]), vec!["a=2", "b=z"]);
        assert_eq!(grid.folder_name(&points[5], &[0, 1]), "a=2,b=z");
        assert_eq!(grid.folder_name(&points[5], &[1]), "b=z");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, needle) in [
            ("beta", "expected KEY=V1,V2"),
            ("beta=", "no values"),
            ("beta=0.1,,0.2", "value 2 is empty"),
            ("beta=0.1,0.1", "given twice"),
            ("=0.1", "not a recipe key"),
            ("dpo..beta=1", "not a recipe key"),
        ] {
            let err = Grid::from_specs(&specs(&[spec]))
                .expect_err(spec)
                .to_string();
            assert!(err.contains(needle), "{spec}: {err}");
        }
        let err = Grid::from_specs(&specs(&["beta=1", "beta=2"])).expect_err("twice");
        assert!(err.to_string().contains("swept twice"), "{err}");
    }

    #[test]
    fn the_command_line_replaces_the_section() {
        let section: Mapping =
            serde_yaml_ng::from_str("beta: [0.1, 0.5]\nlearning_rate: [1.0e-4]").expect("yaml");
        let file = Grid::from_section(&section, "r.yaml").expect("reads");
        let merged = file.merged_with(Grid::from_specs(&specs(&["beta=0.2"])).expect("parses"));
        let keys: Vec<&str> = merged.axes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, vec!["learning_rate", "beta"]);
        let bad: Mapping = serde_yaml_ng::from_str("beta: 0.1").expect("yaml");
        let err = Grid::from_section(&bad, "r.yaml").expect_err("scalar");
        assert!(
            err.to_string()
                .contains("r.yaml: sweep.beta: expected a list"),
            "{err}"
        );
    }

    #[test]
    fn folder_names_are_portable() {
        let grid = Grid::from_specs(&specs(&["model_name_or_path=a/b,c d"])).expect("parses");
        assert_eq!(grid.folder_name(&vec![0], &[0]), "model_name_or_path=a_b");
        assert_eq!(grid.folder_name(&vec![1], &[0]), "model_name_or_path=c_d");
    }
}
