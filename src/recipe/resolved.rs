//! The resolved recipe as YAML (written to `output_dir/recipe.yaml`): every
//! key with its effective value, so a run can be repeated from it alone.
//! Reading it back gives the same stages.

use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use super::load::Recipe;
use super::stage::StageConfig;
use super::values::StageKind;

impl StageConfig {
    /// The stage as one flat mapping of handbook/TRL keys. Only the keys of
    /// this stage's objective are written, so the kind is inferred again.
    pub fn to_mapping(&self) -> Mapping {
        let mut map = Mapping::new();
        merge(&mut map, &self.model);
        merge(&mut map, &self.data);
        merge(&mut map, &self.training);
        match self.kind {
            StageKind::Sft => merge(&mut map, &self.sft),
            StageKind::Dpo => merge(&mut map, &self.dpo),
        }
        merge(&mut map, &self.ext);
        // Folded into `max_length` when read.
        map.shift_remove("max_seq_length");
        map
    }

    /// [`StageConfig::to_mapping`] as YAML text.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.to_mapping()).expect("a mapping of plain values serializes")
    }
}

impl Recipe {
    /// A single stage as a flat config; a chain as `stages:` with inline
    /// stages.
    pub fn to_yaml(&self) -> String {
        if !self.chained && self.stages.len() == 1 {
            return self.stages[0].to_yaml();
        }
        let stages: Vec<Value> = self
            .stages
            .iter()
            .map(|stage| {
                let mut entry = Mapping::new();
                entry.insert(
                    Value::from(stage.kind.name()),
                    Value::Mapping(stage.to_mapping()),
                );
                Value::Mapping(entry)
            })
            .collect();
        let mut root = Mapping::new();
        root.insert(Value::from("stages"), Value::Sequence(stages));
        serde_yaml_ng::to_string(&root).expect("a mapping of plain values serializes")
    }
}

fn merge<T: Serialize>(map: &mut Mapping, group: &T) {
    let value = serde_yaml_ng::to_value(group).expect("key groups serialize");
    if let Value::Mapping(entries) = value {
        map.extend(entries);
    }
}
