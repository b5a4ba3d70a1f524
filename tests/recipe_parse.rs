//! Recipes that must parse: the fixture's, the handbook's zephyr-7b-gemma
//! configs, chained recipes, `--set` overrides, and the YAML round trip.

use std::path::{Path, PathBuf};

use align::recipe::{
    Compat, IntervalStrategy, Recipe, SamplingStrategy, SaveStrategy, SchedulerType, StageKind,
    TorchDtype, TruncationMode,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/tiny-gemma").join(name)
}

fn load(path: &Path, overrides: &[&str]) -> Recipe {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Recipe::load(path, &overrides).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn fixture_dpo_recipe_parses_with_its_values() {
    let recipe = load(&fixture("recipe_dpo.yaml"), &[]);
    assert!(!recipe.chained);
    assert_eq!(recipe.stages.len(), 1);
    let stage = &recipe.stages[0];
    assert_eq!(stage.kind, StageKind::Dpo);
    assert_eq!(Path::new(&stage.model.model_name_or_path), fixture("model"));
    assert_eq!(stage.model.torch_dtype, Some(TorchDtype::Float32));
    let t = &stage.training;
    assert_eq!(t.learning_rate, 0.001);
    assert_eq!(t.lr_scheduler_type, SchedulerType::Cosine);
    assert_eq!(t.num_train_epochs, 2.0);
    assert_eq!(
        (t.per_device_train_batch_size, t.per_device_eval_batch_size),
        (2, 4)
    );
    assert_eq!(t.gradient_accumulation_steps, 2);
    assert_eq!(
        (t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay),
        (0.9, 0.999, 1e-8, 0.0)
    );
    assert_eq!(t.max_grad_norm, 1.0);
    assert_eq!(t.seed, 42);
    assert_eq!(t.bf16, Some(false));
    assert_eq!(t.eval_strategy, IntervalStrategy::No);
    assert_eq!(t.save_strategy, SaveStrategy::No);
    assert_eq!(t.train_sampling_strategy, SamplingStrategy::Sequential);
    assert_eq!(t.output_dir, "out/dpo");
    assert!(t.report_to.0.is_empty());
    // ceil(0.1 * 16) = 2, the fixture's warmup.
    assert_eq!(t.warmup_steps_for(16), 2);
    assert_eq!(t.total_steps(16), 16);
    assert_eq!(stage.dpo.beta, 0.05);
    assert_eq!(stage.dpo.loss_type, vec!["sigmoid".to_string()]);
    assert_eq!(stage.dpo.truncation_mode, TruncationMode::KeepStart);
    assert_eq!(stage.dpo.max_prompt_length, Some(64));
    assert_eq!(stage.max_length(), Some(128));
    assert!(!stage.ext.dataset_shuffle);
    assert_eq!(stage.ext.compat, Compat::Trl1);
    // preprocessing_num_workers: one warning.
    let warned: Vec<&str> = recipe.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(warned, ["preprocessing_num_workers"]);
}

#[test]
fn fixture_sft_recipe_parses_with_its_values() {
    let recipe = load(&fixture("recipe_sft.yaml"), &[]);
    let stage = &recipe.stages[0];
    assert_eq!(stage.kind, StageKind::Sft);
    assert_eq!(
        stage.max_length(),
        Some(128),
        "max_seq_length is TRL's max_length"
    );
    assert!(!stage.sft.packing);
    assert!(
        stage
            .data
            .chat_template
            .as_deref()
            .is_some_and(|t| t.contains("<|im_start|>"))
    );
    assert_eq!(stage.training.num_train_epochs, 1.0);
    assert_eq!(stage.training.max_steps, -1);
    assert_eq!(stage.training.warmup_steps_for(8), 1);
    let kwargs = stage.sft.dataset_kwargs.as_ref().expect("dataset_kwargs");
    assert_eq!(
        (kwargs.add_special_tokens, kwargs.append_concat_token),
        (Some(false), Some(false))
    );
}

#[test]
fn handbook_zephyr_sft_config_parses_warning_only_about_hub_and_wandb_keys() {
    let recipe = load(
        &root().join("recipes/zephyr-7b-gemma/sft/config_full.yaml"),
        &[],
    );
    let stage = &recipe.stages[0];
    assert_eq!(stage.kind, StageKind::Sft);
    assert_eq!(stage.model.model_name_or_path, "google/gemma-7b");
    assert_eq!(
        stage.model.tokenizer_source(),
        "philschmid/gemma-tokenizer-chatml"
    );
    assert_eq!(stage.max_length(), Some(2048));
    assert_eq!(stage.training.learning_rate, 2.0e-5);
    assert_eq!(
        stage.training.eval_strategy,
        IntervalStrategy::Epoch,
        "from evaluation_strategy"
    );
    assert_eq!(stage.training.gradient_accumulation_steps, 4);
    assert_eq!(stage.training.warmup_ratio, 0.1);
    assert!(stage.training.report_to.tensorboard());
    let mut warned: Vec<&str> = recipe.warnings.iter().map(|w| w.key.as_str()).collect();
    warned.sort();
    assert_eq!(
        warned,
        [
            "hub_model_id",
            "hub_strategy",
            "preprocessing_num_workers",
            "push_to_hub",
            "report_to: wandb",
            "use_flash_attention_2"
        ]
    );
}

#[test]
fn handbook_zephyr_dpo_config_parses_warning_only_about_hub_and_wandb_keys() {
    let recipe = load(
        &root().join("recipes/zephyr-7b-gemma/dpo/config_full.yaml"),
        &[],
    );
    let stage = &recipe.stages[0];
    assert_eq!(stage.kind, StageKind::Dpo);
    assert_eq!(stage.dpo.beta, 0.05);
    assert_eq!(stage.training.learning_rate, 5.0e-7);
    assert_eq!(stage.max_length(), Some(1024));
    assert_eq!(stage.dpo.max_prompt_length, Some(512));
    assert_eq!(stage.training.eval_strategy, IntervalStrategy::Steps);
    assert_eq!(stage.training.eval_interval(104), 100);
    // 104 steps: ceil(10.4) = 11 warmup steps.
    assert_eq!(stage.training.warmup_steps_for(104), 11);
    let mut warned: Vec<&str> = recipe.warnings.iter().map(|w| w.key.as_str()).collect();
    warned.sort();
    assert_eq!(
        warned,
        [
            "hub_model_id",
            "preprocessing_num_workers",
            "push_to_hub",
            "report_to: wandb"
        ]
    );
}

#[test]
fn trl_defaults_apply_where_the_recipe_is_silent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dpo.yaml");
    std::fs::write(
        &path,
        "model_name_or_path: m\ndataset_mixer: {d: 1.0}\nbeta: 0.1\n",
    )
    .expect("write");
    let stage = &load(&path, &[]).stages[0];
    assert_eq!(stage.training.learning_rate, 1e-6, "DPOConfig default");
    assert_eq!(stage.max_length(), Some(1024), "DPOConfig default");
    assert_eq!(stage.training.adam_epsilon, 1e-8);
    assert_eq!(stage.training.weight_decay, 0.0);
    assert_eq!(stage.training.lr_scheduler_type, SchedulerType::Linear);
    assert_eq!(
        stage.training.train_sampling_strategy,
        SamplingStrategy::Random
    );
    assert!(stage.ext.dataset_shuffle);
}

#[test]
fn overrides_are_yaml_typed_and_nested() {
    let recipe = load(
        &fixture("recipe_dpo.yaml"),
        &[
            "beta=0.2",
            "learning_rate=1e-4",
            "report_to=[tensorboard]",
            "compat=trl-1",
            "dataset_mixer.data=0.5",
        ],
    );
    let stage = &recipe.stages[0];
    assert_eq!(stage.dpo.beta, 0.2);
    assert_eq!(stage.training.learning_rate, 1e-4);
    assert!(stage.training.report_to.tensorboard());
    let mixer = stage.data.dataset_mixer.as_ref().expect("mixer");
    assert_eq!(mixer.0.len(), 1);
    assert_eq!(mixer.0[0].fraction, 0.5);
}

#[test]
fn explicit_kind_decides_and_rejects_keys_of_the_other_objective() {
    let path = fixture("recipe_dpo.yaml");
    let recipe = Recipe::load_as(&path, &[], Some(StageKind::Dpo)).expect("loads as dpo");
    assert_eq!(recipe.stages[0].kind, StageKind::Dpo);
    let err = Recipe::load_as(&path, &[], Some(StageKind::Sft)).expect_err("beta is a DPO key");
    let text = err.to_string();
    assert!(
        text.contains("recipe_dpo.yaml:") && text.contains("`beta`") && text.contains("DPO key"),
        "{text}"
    );
}

#[test]
fn resolved_yaml_reads_back_to_the_same_stage() {
    for name in ["recipe_dpo.yaml", "recipe_sft.yaml"] {
        let recipe = load(&fixture(name), &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolved.yaml");
        std::fs::write(&path, recipe.to_yaml()).expect("write");
        let again = load(&path, &[]);
        let (mut a, b) = (recipe.stages[0].clone(), again.stages[0].clone());
        a.source = b.source.clone();
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn chained_recipe_runs_sft_then_dpo_from_the_sft_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe_path = dir.path().join("recipe.yaml");
    let sft = fixture("recipe_sft.yaml");
    let dpo = fixture("recipe_dpo.yaml");
    let text = format!(
        "stages:\n  - sft: {}\n  - dpo: {}\noverrides:\n  seed: 7\n  dpo:\n    beta: 0.3\n",
        sft.display(),
        dpo.display()
    );
    std::fs::write(&recipe_path, text).expect("write");
    let recipe = load(&recipe_path, &["sft.learning_rate=0.002"]);
    assert!(recipe.chained);
    let kinds: Vec<StageKind> = recipe.stages.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [StageKind::Sft, StageKind::Dpo]);
    let (s, d) = (&recipe.stages[0], &recipe.stages[1]);
    assert_eq!(d.model.model_name_or_path, s.training.output_dir);
    assert_eq!(
        d.model.tokenizer_source(),
        s.model.model_name_or_path,
        "tokenizer from the SFT's source"
    );
    assert_eq!(
        d.data.chat_template, s.data.chat_template,
        "template of the SFT stage"
    );
    assert_eq!((s.training.seed, d.training.seed), (7, 7));
    assert_eq!(d.dpo.beta, 0.3);
    assert_eq!(
        (s.training.learning_rate, d.training.learning_rate),
        (0.002, 0.001)
    );

    let only_dpo = Recipe::load_as(&recipe_path, &[], Some(StageKind::Dpo)).expect("dpo stage");
    assert_eq!(only_dpo.stages.len(), 1);
    assert_eq!(only_dpo.stages[0].kind, StageKind::Dpo);

    let again_path = dir.path().join("resolved.yaml");
    std::fs::write(&again_path, recipe.to_yaml()).expect("write");
    let again = load(&again_path, &[]);
    assert_eq!(again.stages.len(), 2);
    assert_eq!(again.stages[1].dpo.beta, 0.3);
}

#[test]
fn mixture_form_and_compat_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sft.yaml");
    let text = [
        "model_name_or_path: google/gemma-7b",
        "max_seq_length: 2048",
        "compat: trl-0.7",
        "dataset_mixture:",
        "  datasets:",
        "    - id: HuggingFaceH4/deita-10k-v0-sft",
        "      config: default",
        "      split: train_sft",
        "      columns: [messages]",
        "      weight: 1.0",
        "  test_split_size: 1000",
        "  seed: 0",
    ]
    .join("\n");
    std::fs::write(&path, text).expect("write");
    let stage = &load(&path, &[]).stages[0];
    assert_eq!(stage.ext.compat, Compat::Trl07);
    match stage.data.plan().expect("plan") {
        align::recipe::DataPlan::Mixture {
            sources,
            seed,
            test_split_size,
        } => {
            assert_eq!(sources.len(), 1);
            assert_eq!(sources[0].split, "train_sft");
            assert_eq!(
                sources[0].columns.as_deref(),
                Some(&["messages".to_string()][..])
            );
            assert_eq!((seed, test_split_size), (0, Some(1000.0)));
        }
        other => panic!("expected a mixture, got {other:?}"),
    }
}

#[test]
fn zephyr_recipe_chains_both_stages_on_the_march_2024_stack() {
    let path = root().join("recipes/zephyr-7b-gemma/recipe.yaml");
    let recipe = load(&path, &[]);
    let kinds: Vec<StageKind> = recipe.stages.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [StageKind::Sft, StageKind::Dpo]);
    assert!(recipe.stages.iter().all(|s| s.ext.compat == Compat::Trl07));
    // handbook ff618a4 SFTConfig/DPOConfig default, kept by the trl-0.7 stack.
    assert!(recipe.stages.iter().all(|s| s.training.logging_first_step));
    let (sft, dpo) = (&recipe.stages[0], &recipe.stages[1]);
    assert_eq!(sft.max_length(), Some(2048));
    assert_eq!(dpo.dpo.max_prompt_length, Some(512));
    assert_eq!(dpo.model.model_name_or_path, sft.training.output_dir);
    let modern = load(&path, &["compat=trl-1"]);
    assert!(modern.stages.iter().all(|s| s.ext.compat == Compat::Trl1));
    assert!(!modern.stages[0].training.logging_first_step);
}
