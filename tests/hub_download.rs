//! Downloads from the Hugging Face Hub, against a stand-in hub on
//! 127.0.0.1 (`common::fake_hub`) and a cache in a temporary folder: the
//! cache layout Python's stack reads, only the files a recipe needs,
//! resumed partial files, gated repos, offline mode, and a DPO recipe
//! naming hub ids that trains after `align` fetched them.

mod common;

use std::path::Path;
use std::process::Command;

use align::data::RepoKind;
use align::data::hub::HubSettings;
use align::data::hub::download::{RepoStatus, make_local};
use align::data::hub::progress::Display;
use align::data::hub::wanted::RepoNeed;
use common::fake_hub::{COMMIT, FakeHub, FakeRepo, etag};
use common::fixture;

const MODEL: &str = "tiny-org/tiny-gemma";
const DATASET: &str = "tiny-org/tiny-prefs";

fn folder_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("fixture folder")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read fixture"))
        })
        .collect();
    files.push(("README.md".into(), b"# tiny\n".to_vec()));
    files.push(("weights.gguf".into(), b"not fetched".to_vec()));
    files.sort();
    files
}

fn model_repo(token: Option<&str>) -> FakeRepo {
    FakeRepo {
        kind: "models",
        id: MODEL.into(),
        files: folder_files(&fixture("tiny-gemma/model")),
        token: token.map(str::to_string),
    }
}

fn dataset_repo() -> FakeRepo {
    let data = fixture("tiny-gemma/data");
    let file = |split: &str| {
        (
            format!("data/{split}-00000-of-00001.parquet"),
            std::fs::read(data.join(format!("{split}.parquet"))).expect("fixture parquet"),
        )
    };
    FakeRepo {
        kind: "datasets",
        id: DATASET.into(),
        files: vec![
            ("README.md".into(), b"---\nlicense: mit\n---\n".to_vec()),
            file("dpo_train"),
            file("dpo_test"),
            file("sft_train"),
        ],
        token: None,
    }
}

fn settings(hub: &FakeHub, cache: &Path, token: Option<&str>) -> HubSettings {
    HubSettings {
        endpoint: hub.url.clone(),
        cache_dir: cache.to_path_buf(),
        token: token.map(str::to_string),
        offline: false,
    }
}

fn model_need(weights: bool) -> RepoNeed {
    RepoNeed {
        id: MODEL.into(),
        kind: RepoKind::Model,
        revision: "main".into(),
        config: true,
        weights,
        splits: Vec::new(),
    }
}

fn dataset_need(splits: &[&str]) -> RepoNeed {
    RepoNeed {
        id: DATASET.into(),
        kind: RepoKind::Dataset,
        revision: "main".into(),
        config: false,
        weights: false,
        splits: splits.iter().map(|s| (None, s.to_string())).collect(),
    }
}

#[test]
fn a_model_lands_in_the_cache_layout_python_reads() {
    let hub = FakeHub::start(vec![model_repo(None)]);
    let cache = tempfile::tempdir().unwrap();
    let status = make_local(
        &model_need(true),
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect("download");
    let repo = cache.path().join("models--tiny-org--tiny-gemma");
    let snapshot = repo.join("snapshots").join(COMMIT);
    let RepoStatus::Fetched { dir, files } = status else {
        panic!("expected a download, got {status:?}");
    };
    assert_eq!(dir, snapshot);
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert!(
        names.contains(&"model.safetensors") && names.contains(&"tokenizer.json"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"weights.gguf") && !names.contains(&"README.md"),
        "{names:?}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    let weights = std::fs::read(fixture("tiny-gemma/model/model.safetensors")).unwrap();
    let link = snapshot.join("model.safetensors");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&link).unwrap(), weights);
    assert!(repo.join("blobs").join(etag(&weights)).is_file());
    // The weights came through the content store's redirect.
    assert!(
        hub.seen()
            .iter()
            .any(|s| s.path == format!("/cdn/{}", etag(&weights)))
    );

    // A second time nothing is requested: the cached snapshot is complete.
    let before = hub.seen().len();
    let again = make_local(
        &model_need(true),
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect("cached");
    assert_eq!(again, RepoStatus::Cached(snapshot));
    assert_eq!(hub.seen().len(), before);
}

#[test]
fn a_dataset_fetches_only_the_splits_asked() {
    let hub = FakeHub::start(vec![dataset_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let need = dataset_need(&["dpo_train", "dpo_test"]);
    let status = make_local(
        &need,
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect("download");
    let RepoStatus::Fetched { dir, files } = status else {
        panic!("expected a download, got {status:?}");
    };
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        names,
        [
            "data/dpo_train-00000-of-00001.parquet",
            "data/dpo_test-00000-of-00001.parquet"
        ]
    );
    assert!(!dir.join("data/sft_train-00000-of-00001.parquet").exists());
    let resolved =
        align::data::source::split_files(&dir, DATASET, "dpo_train", None).expect("split");
    assert_eq!(
        resolved,
        [dir.join("data/dpo_train-00000-of-00001.parquet")]
    );

    let missing = dataset_need(&["train_prefs"]);
    let err = make_local(
        &missing,
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect_err("no such split");
    let text = err.to_string();
    assert!(
        text.contains("tiny-org/tiny-prefs") && text.contains("split `train_prefs`"),
        "{text}"
    );
}

#[test]
fn an_interrupted_download_resumes_from_its_part_file() {
    let hub = FakeHub::start(vec![model_repo(None)]);
    let cache = tempfile::tempdir().unwrap();
    let weights = std::fs::read(fixture("tiny-gemma/model/model.safetensors")).unwrap();
    let blobs = cache.path().join("models--tiny-org--tiny-gemma/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let half = weights.len() / 2;
    std::fs::write(
        blobs.join(format!("{}.part", etag(&weights))),
        &weights[..half],
    )
    .unwrap();
    make_local(
        &model_need(true),
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect("download");
    let asked = format!("bytes={half}-");
    assert!(
        hub.seen()
            .iter()
            .any(|s| s.range.as_deref() == Some(asked.as_str())),
        "no request resumed at byte {half}: {:?}",
        hub.seen()
    );
    assert_eq!(std::fs::read(blobs.join(etag(&weights))).unwrap(), weights);
}

#[test]
fn a_connection_cut_mid_file_is_resumed_with_the_right_bytes() {
    let hub = FakeHub::start(vec![model_repo(None)]);
    hub.cut_once("model.safetensors");
    let cache = tempfile::tempdir().unwrap();
    make_local(
        &model_need(true),
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect("download after a retry");
    let weights = std::fs::read(fixture("tiny-gemma/model/model.safetensors")).unwrap();
    let link = cache
        .path()
        .join("models--tiny-org--tiny-gemma/snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert_eq!(std::fs::read(link).unwrap(), weights);
    let blob = format!("/cdn/{}", etag(&weights));
    let resumed = hub.seen().iter().filter(|s| s.path == blob).any(|s| {
        s.range
            .as_deref()
            .is_some_and(|r| r != "bytes=0-" && r != "bytes=0-0")
    });
    assert!(resumed, "no ranged retry: {:?}", hub.seen());
}

#[test]
fn a_gated_repo_says_to_accept_the_license_and_set_hf_token() {
    let hub = FakeHub::start(vec![model_repo(Some("good-token"))]);
    let cache = tempfile::tempdir().unwrap();
    let err = make_local(
        &model_need(false),
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect_err("gated");
    let text = err.to_string();
    assert!(
        text.contains("model `tiny-org/tiny-gemma` is gated")
            && text.contains(&format!("{}/tiny-org/tiny-gemma", hub.url))
            && text.contains("set HF_TOKEN"),
        "{text}"
    );
    let wrong = make_local(
        &model_need(false),
        &settings(&hub, cache.path(), Some("someone-else")),
        Display::Quiet,
        false,
    )
    .expect_err("not granted");
    assert!(
        wrong.to_string().contains("has not been granted access"),
        "{wrong}"
    );
    make_local(
        &model_need(false),
        &settings(&hub, cache.path(), Some("good-token")),
        Display::Quiet,
        false,
    )
    .expect("the token opens it");
    assert!(
        hub.seen()
            .iter()
            .any(|s| s.auth.as_deref() == Some("Bearer good-token"))
    );
}

#[test]
fn an_unknown_repo_and_an_unreachable_hub_are_named() {
    let hub = FakeHub::start(vec![]);
    let cache = tempfile::tempdir().unwrap();
    let err = make_local(
        &model_need(false),
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect_err("no such repo");
    assert!(
        err.to_string()
            .contains("model `tiny-org/tiny-gemma` not found on"),
        "{err}"
    );
    // Port 9 (discard) has no listener: the connection is refused.
    let gone = HubSettings {
        endpoint: "http://127.0.0.1:9".into(),
        ..settings(&hub, cache.path(), None)
    };
    let err =
        make_local(&model_need(false), &gone, Display::Quiet, false).expect_err("unreachable");
    let text = err.to_string();
    assert!(
        text.contains("cannot be reached") && text.contains("models--tiny-org--tiny-gemma"),
        "{text}"
    );
}

#[test]
fn offline_uses_the_cache_and_says_how_to_fill_it() {
    let cache = tempfile::tempdir().unwrap();
    let offline = HubSettings {
        endpoint: "http://127.0.0.1:9".into(),
        cache_dir: cache.path().to_path_buf(),
        token: None,
        offline: true,
    };
    let err =
        make_local(&model_need(true), &offline, Display::Quiet, false).expect_err("empty cache");
    let text = err.to_string();
    assert!(
        text.contains("HF_HUB_OFFLINE is set") && text.contains("align download"),
        "{text}"
    );
    let hub = FakeHub::start(vec![model_repo(None)]);
    make_local(
        &model_need(true),
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect("download");
    drop(hub);
    let cached = make_local(&model_need(true), &offline, Display::Quiet, false).expect("cached");
    assert!(matches!(cached, RepoStatus::Cached(_)), "{cached:?}");
}

/// The fixture's DPO recipe with hub ids for its model and dataset.
fn hub_recipe(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(fixture("tiny-gemma/recipe_dpo.yaml")).unwrap();
    let text = text
        .replace(
            "model_name_or_path: model ",
            &format!("model_name_or_path: {MODEL} "),
        )
        .replace("  data: 1.0", &format!("  {DATASET}: 1.0"))
        .replace(
            "output_dir: out/dpo",
            &format!("output_dir: {}", dir.join("out").display()),
        );
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn align(hub_url: &str, hf_home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_align"));
    command
        .env("HF_ENDPOINT", hub_url)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("ALIGN_DATA_DIR");
    command
}

#[test]
fn a_dpo_recipe_naming_hub_ids_trains_after_downloading() {
    let hub = FakeHub::start(vec![model_repo(None), dataset_repo()]);
    let dir = tempfile::tempdir().unwrap();
    let recipe = hub_recipe(dir.path());
    let hf_home = dir.path().join("hf");

    let listed = align(&hub.url, &hf_home)
        .args(["download", "--dry-run"])
        .arg(&recipe)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        stdout.contains("model `tiny-org/tiny-gemma`: would download")
            && stdout.contains("data/dpo_test-00000-of-00001.parquet")
            && !stdout.contains("sft_train"),
        "{stdout}"
    );
    assert!(
        !hf_home
            .join("hub")
            .join("models--tiny-org--tiny-gemma/snapshots")
            .exists()
    );

    let trained = align(&hub.url, &hf_home)
        .args([
            "dpo",
            "--quiet",
            "--set",
            "max_steps=1",
            "--set",
            "do_eval=false",
        ])
        .arg(&recipe)
        .output()
        .unwrap();
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    assert!(dir.path().join("out/model.safetensors").is_file());
    let snapshot = hf_home
        .join("hub/datasets--tiny-org--tiny-prefs/snapshots")
        .join(COMMIT);
    assert!(
        snapshot
            .join("data/dpo_train-00000-of-00001.parquet")
            .is_file()
    );

    // Offline, with the hub gone, everything is found in the cache.
    let url = hub.url.clone();
    drop(hub);
    let offline = align(&url, &hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .arg("download")
        .arg(&recipe)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&offline.stdout);
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    assert!(
        stdout.contains("model `tiny-org/tiny-gemma`: cached in"),
        "{stdout}"
    );
}

#[test]
fn align_download_reads_the_token_file_and_a_second_run_sends_no_request() {
    let hub = FakeHub::start(vec![model_repo(Some("good-token")), dataset_repo()]);
    let dir = tempfile::tempdir().unwrap();
    let recipe = hub_recipe(dir.path());
    let hf_home = dir.path().join("hf");

    let refused = align(&hub.url, &hf_home)
        .arg("download")
        .arg(&recipe)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("model `tiny-org/tiny-gemma` is gated") && stderr.contains("HF_TOKEN"),
        "{stderr}"
    );

    std::fs::create_dir_all(&hf_home).unwrap();
    std::fs::write(hf_home.join("token"), "good-token\n").unwrap();
    let fetched = align(&hub.url, &hf_home)
        .arg("download")
        .arg(&recipe)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&fetched.stdout);
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert!(
        stdout.contains("model `tiny-org/tiny-gemma`: downloaded"),
        "{stdout}"
    );

    let before = hub.seen().len();
    let again = align(&hub.url, &hf_home)
        .arg("download")
        .arg(&recipe)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("cached in"));
    assert_eq!(
        hub.seen().len(),
        before,
        "a complete cache sends no request"
    );
}

#[test]
fn a_dataset_card_names_the_files_of_a_split() {
    let parquet = std::fs::read(fixture("tiny-gemma/data/dpo_train.parquet")).unwrap();
    let card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: dpo_train\n    path: pairs/first*.parquet\n---\n# tiny\n";
    let repo = FakeRepo {
        kind: "datasets",
        id: DATASET.into(),
        files: vec![
            ("README.md".into(), card.as_bytes().to_vec()),
            ("pairs/first-part.parquet".into(), parquet.clone()),
            ("pairs/second-part.parquet".into(), parquet),
        ],
        token: None,
    };
    let hub = FakeHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let need = dataset_need(&["dpo_train"]);
    let listed = make_local(
        &need,
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        true,
    )
    .expect("dry run");
    let RepoStatus::WouldFetch { files } = listed else {
        panic!("expected a listing, got {listed:?}");
    };
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, ["README.md", "pairs/first-part.parquet"]);
    assert!(
        !cache
            .path()
            .join("datasets--tiny-org--tiny-prefs/snapshots")
            .exists()
    );

    let status = make_local(
        &need,
        &settings(&hub, cache.path(), None),
        Display::Quiet,
        false,
    )
    .expect("download");
    let RepoStatus::Fetched { dir, .. } = status else {
        panic!("expected a download, got {status:?}");
    };
    let read = align::data::source::split_files(&dir, DATASET, "dpo_train", None).expect("split");
    assert_eq!(read, [dir.join("pairs/first-part.parquet")]);
}
