//! The data keys of a stage: which datasets, which splits, how they are
//! mixed, and the chat template. Both handbook forms are accepted: the 2024
//! `dataset_mixer` + `dataset_splits`, and the 2025 `dataset_mixture`.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seed of the 2024 handbook mixer: `mix_datasets` shuffles with a fixed
/// `seed=42`, whatever the training seed.
pub const MIXER_SEED: u64 = 42;

/// The handbook's "Data training arguments" plus TRL's sequence length keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataArgs {
    /// A Jinja chat template; wins over the tokenizer's own.
    pub chat_template: Option<String>,
    /// 2024 form: dataset id -> fraction of its train split, in file order.
    pub dataset_mixer: Option<DatasetMixer>,
    /// 2024 form: split names; those containing `train` are mixed into the
    /// training set, those containing `test` into the evaluation set.
    pub dataset_splits: Vec<String>,
    /// 2024 form: one dataset config name per mixer entry (hub configs).
    pub dataset_configs: Option<Vec<String>>,
    /// 2025 form.
    pub dataset_mixture: Option<DatasetMixture>,
    /// TRL `ScriptArguments` form: a single dataset.
    pub dataset_name: Option<String>,
    pub dataset_config: Option<String>,
    pub dataset_train_split: String,
    pub dataset_test_split: String,
    /// Maximum tokens per sequence (TRL `max_length`; the handbook's SFT
    /// recipes call it `max_seq_length`). `None`: no truncation.
    pub max_length: Option<usize>,
    /// Padding token; `None`: the tokenizer's, else its EOS (as TRL).
    pub pad_token: Option<String>,
    /// trl-0.7 handbook behaviour: an empty system turn is inserted.
    pub auto_insert_empty_system_msg: Option<bool>,
    /// Recorded by the 2024 handbook; TRL never truncates with it.
    pub truncation_side: Option<String>,
}

impl Default for DataArgs {
    fn default() -> Self {
        DataArgs {
            chat_template: None,
            dataset_mixer: None,
            dataset_splits: vec!["train".into(), "test".into()],
            dataset_configs: None,
            dataset_mixture: None,
            dataset_name: None,
            dataset_config: None,
            dataset_train_split: "train".into(),
            dataset_test_split: "test".into(),
            max_length: None,
            pad_token: None,
            auto_insert_empty_system_msg: None,
            truncation_side: None,
        }
    }
}

/// One `dataset_mixer` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MixerEntry {
    pub id: String,
    pub fraction: f64,
}

/// `dataset_mixer`: an ordered map (order decides concatenation order).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetMixer(pub Vec<MixerEntry>);

impl Serialize for DatasetMixer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for entry in &self.0 {
            map.serialize_entry(&entry.id, &entry.fraction)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for DatasetMixer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MixerVisitor;
        impl<'de> Visitor<'de> for MixerVisitor {
            type Value = DatasetMixer;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of dataset id to fraction")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DatasetMixer, A::Error> {
                let mut entries = Vec::new();
                while let Some((id, fraction)) = map.next_entry::<String, f64>()? {
                    entries.push(MixerEntry { id, fraction });
                }
                Ok(DatasetMixer(entries))
            }
        }
        deserializer.deserialize_map(MixerVisitor)
    }
}

/// 2025 handbook `dataset_mixture`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetMixture {
    pub datasets: Vec<MixtureDataset>,
    #[serde(default)]
    pub seed: u64,
    /// Size of the evaluation set carved out of the mixture: a count, or
    /// below 1 a fraction (`datasets.train_test_split(test_size=...)`).
    #[serde(default)]
    pub test_split_size: Option<f64>,
}

/// One dataset of a `dataset_mixture`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureDataset {
    pub id: String,
    #[serde(default)]
    pub config: Option<String>,
    #[serde(default = "default_split")]
    pub split: String,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub weight: Option<f64>,
}

fn default_split() -> String {
    "train".into()
}

/// Which part of the data a split feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitRole {
    Train,
    Test,
}

/// One split file set to read: dataset `id`, its `split`, and the fraction
/// of rows kept.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSource {
    pub id: String,
    pub config: Option<String>,
    pub split: String,
    pub fraction: f64,
    pub columns: Option<Vec<String>>,
}

/// The data plan of a stage, one shape for all three key forms.
#[derive(Debug, Clone, PartialEq)]
pub enum DataPlan {
    /// 2024 mixer (also `dataset_name`): each split role gets the
    /// concatenation of its sources, shuffled with [`MIXER_SEED`].
    Mixer {
        train: Vec<SplitSource>,
        test: Vec<SplitSource>,
    },
    /// 2025 mixture: every source is shuffled with `seed`, subsampled,
    /// concatenated, then split into train/test by `test_split_size`.
    Mixture {
        sources: Vec<SplitSource>,
        seed: u64,
        test_split_size: Option<f64>,
    },
}

impl DataArgs {
    /// The data plan, or a message naming the offending key.
    pub fn plan(&self) -> Result<DataPlan, (&'static str, String)> {
        let forms = [
            self.dataset_mixer.is_some(),
            self.dataset_mixture.is_some(),
            self.dataset_name.is_some(),
        ];
        match forms.iter().filter(|f| **f).count() {
            0 => return Err(("dataset_mixer", "no dataset: set dataset_mixer (with dataset_splits), dataset_mixture or dataset_name".into())),
            1 => {}
            _ => return Err(("dataset_mixture", "set only one of dataset_mixer, dataset_mixture and dataset_name".into())),
        }
        if let Some(mixture) = &self.dataset_mixture {
            return self.mixture_plan(mixture);
        }
        if let Some(name) = &self.dataset_name {
            let source = |split: &str| SplitSource {
                id: name.clone(),
                config: self.dataset_config.clone(),
                split: split.to_string(),
                fraction: 1.0,
                columns: None,
            };
            return Ok(DataPlan::Mixer {
                train: vec![source(&self.dataset_train_split)],
                test: vec![source(&self.dataset_test_split)],
            });
        }
        let mixer = self.dataset_mixer.as_ref().expect("one form is set");
        self.mixer_plan(mixer)
    }

    fn mixer_plan(&self, mixer: &DatasetMixer) -> Result<DataPlan, (&'static str, String)> {
        if let Some(configs) = &self.dataset_configs
            && configs.len() != mixer.0.len()
        {
            return Err((
                "dataset_configs",
                "needs one entry per dataset_mixer entry".into(),
            ));
        }
        check_fractions(
            mixer.0.iter().map(|e| (e.id.as_str(), e.fraction)),
            "dataset_mixer",
        )?;
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for split in &self.dataset_splits {
            let role = split_role(split).ok_or((
                "dataset_splits",
                format!("split `{split}` is neither a train nor a test split (its name must contain `train` or `test`)"),
            ))?;
            for (index, entry) in mixer.0.iter().enumerate() {
                let source = SplitSource {
                    id: entry.id.clone(),
                    config: self.dataset_configs.as_ref().map(|c| c[index].clone()),
                    split: split.clone(),
                    // The handbook subsamples train splits only.
                    fraction: if role == SplitRole::Train {
                        entry.fraction
                    } else {
                        1.0
                    },
                    columns: None,
                };
                match role {
                    SplitRole::Train => train.push(source),
                    SplitRole::Test => test.push(source),
                }
            }
        }
        Ok(DataPlan::Mixer { train, test })
    }

    fn mixture_plan(&self, mixture: &DatasetMixture) -> Result<DataPlan, (&'static str, String)> {
        if mixture.datasets.is_empty() {
            return Err(("dataset_mixture", "`datasets` is empty".into()));
        }
        let weights = mixture
            .datasets
            .iter()
            .map(|d| (d.id.as_str(), d.weight.unwrap_or(1.0)));
        check_fractions(weights, "dataset_mixture")?;
        if let Some(size) = mixture.test_split_size
            && (size < 0.0 || (size >= 1.0 && size.fract() != 0.0))
        {
            return Err((
                "dataset_mixture",
                format!("test_split_size must be a count or a fraction in [0, 1), got {size}"),
            ));
        }
        let sources = mixture
            .datasets
            .iter()
            .map(|d| SplitSource {
                id: d.id.clone(),
                config: d.config.clone(),
                split: d.split.clone(),
                fraction: d.weight.unwrap_or(1.0),
                columns: d.columns.clone(),
            })
            .collect();
        Ok(DataPlan::Mixture {
            sources,
            seed: mixture.seed,
            test_split_size: mixture.test_split_size,
        })
    }

    /// Every dataset id the stage reads (for path resolution).
    pub(crate) fn dataset_ids_mut(&mut self) -> Vec<&mut String> {
        let mut ids: Vec<&mut String> = Vec::new();
        if let Some(mixer) = &mut self.dataset_mixer {
            ids.extend(mixer.0.iter_mut().map(|e| &mut e.id));
        }
        if let Some(mixture) = &mut self.dataset_mixture {
            ids.extend(mixture.datasets.iter_mut().map(|d| &mut d.id));
        }
        if let Some(name) = &mut self.dataset_name {
            ids.push(name);
        }
        ids
    }
}

/// The handbook's rule: a split named `*train*` trains, `*test*` evaluates.
pub fn split_role(split: &str) -> Option<SplitRole> {
    if split.contains("train") {
        Some(SplitRole::Train)
    } else if split.contains("test") {
        Some(SplitRole::Test)
    } else {
        None
    }
}

fn check_fractions<'a>(
    entries: impl Iterator<Item = (&'a str, f64)>,
    key: &'static str,
) -> Result<(), (&'static str, String)> {
    for (id, fraction) in entries {
        if !(0.0..=1.0).contains(&fraction) {
            return Err((
                key,
                format!("fraction of `{id}` must be in [0, 1], got {fraction}"),
            ));
        }
    }
    Ok(())
}
