//! `packing: true` with trl-1 (TRL's BFD packing, padding-free): a packed
//! row scores each conversation exactly as the conversation alone (positions
//! restart and attention stays inside each conversation), and `align sft`
//! on the fixture recipe trains on fewer, fuller rows.

mod common;

use align::backend::{Cpu, CpuTrain, cpu_device};
use align::model::hf::load_gemma;
use align::recipe::StageKind;
use align::train::logps::{ScoredBatch, sequence_logps};
use align::train::run::run_recipe;
use align::train::stage::RunOptions;
use burn::tensor::DType;
use common::{fixture, read_jsonl};

fn row(ids: &[i64], scored: Vec<bool>, positions: Option<Vec<usize>>) -> ScoredBatch {
    ScoredBatch {
        rows: 1,
        width: ids.len(),
        input_ids: ids.to_vec(),
        attention_mask: vec![1; ids.len()],
        scored,
        positions: positions.map(|p| vec![p]),
    }
}

fn sum(batch: &ScoredBatch) -> f64 {
    let model = load_gemma::<Cpu>(&fixture("tiny-gemma/model"), DType::F32, &cpu_device()).unwrap();
    let out = sequence_logps(&model, batch, &cpu_device());
    f64::from(out.sums.into_data().to_vec::<f32>().unwrap()[0])
}

#[test]
fn a_packed_row_scores_each_conversation_as_alone() {
    let a: Vec<i64> = vec![2, 5, 373, 337, 263, 414, 338, 344, 6, 263];
    let b: Vec<i64> = vec![2, 5, 387, 682, 325, 263, 505, 450];
    let alone = |ids: &[i64]| {
        let scored = (0..ids.len()).map(|t| t > 0).collect();
        sum(&row(ids, scored, None))
    };
    let want = alone(&a) + alone(&b);
    let packed: Vec<i64> = a.iter().chain(&b).copied().collect();
    let scored: Vec<bool> = (0..packed.len()).map(|t| t != 0 && t != a.len()).collect();
    let positions: Vec<usize> = (0..a.len()).chain(0..b.len()).collect();
    let got = sum(&row(&packed, scored.clone(), Some(positions)));
    assert!(
        ((got - want) / want).abs() < 1e-5,
        "packed {got} vs alone {want}"
    );
    // Without the document boundaries, b would see a: another number.
    let crossing = sum(&row(&packed, scored, None));
    assert!(
        ((crossing - want) / want).abs() > 1e-3,
        "{crossing} vs {want}"
    );
}

#[test]
fn align_sft_packs_the_fixture_rows() {
    let run = |packing: bool| {
        let out = tempfile::tempdir().unwrap();
        let set = vec![
            format!("output_dir={}", out.path().display()),
            format!("packing={packing}"),
        ];
        let options = RunOptions {
            quiet: true,
            ..Default::default()
        };
        let config = fixture("tiny-gemma/recipe_sft.yaml");
        run_recipe::<CpuTrain>(
            &config,
            &set,
            Some(StageKind::Sft),
            &options,
            true,
            &cpu_device(),
        )
        .unwrap();
        let log = read_jsonl(&out.path().join("metrics.jsonl"));
        let steps = log.iter().filter(|e| e.get("loss").is_some()).count();
        let finite = log
            .iter()
            .filter_map(|e| e.get("loss").and_then(|v| v.as_f64()))
            .all(f64::is_finite);
        (steps, finite)
    };
    let (unpacked, _) = run(false);
    let (packed, finite) = run(true);
    assert!(finite);
    assert!(
        packed < unpacked,
        "packed {packed} steps, unpacked {unpacked}"
    );
}
