//! The `align` command line. Argument parsing only: every behaviour lives in
//! the library, so tests exercise the same code paths as users.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use align::backend::{Backend, CpuTrain};
use align::generate::session::{answer_file, answer_one, chat};
use align::generate::{Generator, SamplingSettings};
use align::plan::devices::parse_bytes;
use align::plan::{DeviceRequest, PlanRequest, make_plan};
use align::recipe::{BackendKind, Recipe, StageConfig, StageKind};
use align::train::TrainBackend;
use align::train::parallel::{Cluster, DeviceKind, DeviceList, NodeSetup};
use align::train::resume::ResumeFrom;
use align::train::run::{StageResult, run_recipe, run_recipe_on};
use align::train::stage::RunOptions;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "align",
    version,
    about = "SFT + DPO for Gemma, with TRL's numbers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by every command that runs a recipe.
#[derive(Args, Clone, Debug, Default)]
struct RunFlags {
    /// Override a recipe key: KEY=VALUE (value parsed as YAML; nested keys with dots).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Backend: flex (CPU, default) or cuda (needs the `cuda` feature).
    #[arg(long)]
    backend: Option<String>,
    /// Devices, e.g. `cpu:0,cpu:1`, `cuda:all`, `cuda:0,1`: one model
    /// replica each, data parallel (effective batch: per device x accumulation x devices).
    #[arg(long)]
    devices: Option<String>,
    #[command(flatten)]
    nodes: NodeFlags,
    /// Only warnings and errors on stderr.
    #[arg(long)]
    quiet: bool,
    /// Continue from the newest `checkpoint-STEP/` in each stage's output_dir.
    #[arg(long)]
    resume: bool,
    /// Continue from this checkpoint folder.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    resume_from: Option<PathBuf>,
}

impl RunFlags {
    fn options(&self, eval_only: bool) -> RunOptions {
        let resume = match (&self.resume_from, self.resume) {
            (Some(dir), _) => Some(ResumeFrom::Path(dir.clone())),
            (None, true) => Some(ResumeFrom::Latest),
            (None, false) => None,
        };
        RunOptions {
            quiet: self.quiet,
            eval_only,
            resume,
            stop_after_step: None,
        }
    }
}

/// The one device a command that does not train runs on.
#[derive(Args, Clone, Debug, Default)]
struct DeviceFlags {
    /// Backend: flex (CPU, default) or cuda (needs the `cuda` feature).
    #[arg(long)]
    backend: Option<String>,
    /// The device, e.g. `cuda:1` (default: the backend's first).
    #[arg(long = "device", value_name = "DEVICE")]
    devices: Option<String>,
}

/// Multi-node data parallelism (burn-collective's global mode): every node
/// runs the same command with its own `--node-rank` and `--node-address`,
/// and `align orchestrator` runs once, at `--global-address`.
#[derive(Args, Clone, Debug, Default)]
struct NodeFlags {
    /// Number of nodes (processes), each with the same --devices.
    #[arg(long, requires_all = ["node_rank", "global_address", "node_address", "data_service_port"])]
    num_nodes: Option<u32>,
    /// This node's index, 0..num_nodes (node 0 holds rank 0: logs, checkpoints, the model).
    #[arg(long, requires = "num_nodes")]
    node_rank: Option<usize>,
    /// The orchestrator's address, e.g. ws://10.0.0.1:3000.
    #[arg(long, requires = "num_nodes")]
    global_address: Option<String>,
    /// This node as the others reach it, e.g. ws://10.0.0.2:3001.
    #[arg(long, requires = "num_nodes")]
    node_address: Option<String>,
    /// Port of this node's tensor data service (the port of --node-address).
    #[arg(long, requires = "num_nodes")]
    data_service_port: Option<u16>,
}

impl NodeFlags {
    fn setup(&self) -> Option<NodeSetup> {
        Some(NodeSetup {
            num_nodes: self.num_nodes?,
            node_rank: self.node_rank?,
            global_address: self.global_address.clone()?,
            node_address: self.node_address.clone()?,
            data_service_port: self.data_service_port?,
        })
    }
}

/// The devices of a run: `--devices` (one CPU device by default) and the
/// other nodes.
fn cluster<B: Backend>(flags: &RunFlags) -> Result<Cluster<B::Device>> {
    let mut cluster = match &flags.devices {
        None => Cluster::single(B::Device::default()),
        Some(spec) => {
            let (devices, names) = DeviceList::parse(spec)?.devices::<B>();
            if devices.is_empty() {
                bail!("--devices {spec}: no device found");
            }
            Cluster::local(devices, names)
        }
    };
    cluster.nodes = flags.nodes.setup();
    if let Some(nodes) = &cluster.nodes
        && nodes.node_rank >= nodes.num_nodes as usize
    {
        bail!(
            "--node-rank {}: expected 0..{} (--num-nodes)",
            nodes.node_rank,
            nodes.num_nodes
        );
    }
    Ok(cluster)
}

/// `flags` with the recipe's `devices`/`backend` keys where `--devices`/
/// `--backend` are not given (the command line wins). Every stage must
/// name the same devices: replicas run a whole recipe.
fn with_recipe_devices(path: &Path, flags: &RunFlags, kind: Option<StageKind>) -> Result<RunFlags> {
    let mut flags = flags.clone();
    if flags.devices.is_some() {
        return Ok(flags);
    }
    let recipe = Recipe::load_as(path, &flags.set, kind)
        .with_context(|| format!("reading {}", path.display()))?;
    let asked = |stage: &StageConfig| {
        let list = DeviceList::from_recipe(stage.ext.backend, stage.ext.devices.as_ref());
        (list, stage.ext.backend)
    };
    let mut stages = recipe.stages.iter().map(asked);
    let Some((list, backend)) = stages.next() else {
        return Ok(flags);
    };
    if stages.any(|other| other != (list.clone(), backend)) {
        bail!(
            "{}: the stages name different `devices`/`backend`; pass --devices for the whole run",
            path.display()
        );
    }
    flags.devices = list.map(|list| list.to_string());
    if flags.backend.is_none() && backend == Some(BackendKind::Cuda) {
        flags.backend = Some("cuda".into());
    }
    Ok(flags)
}

/// The backend `--backend` names, else the one `--devices` implies.
fn backend_name(flags: &RunFlags) -> Result<Option<String>> {
    let implied = match &flags.devices {
        Some(spec) => match DeviceList::parse(spec)?.kind {
            DeviceKind::Cuda => Some("cuda".to_string()),
            DeviceKind::Cpu => None,
        },
        None => None,
    };
    Ok(flags.backend.clone().or(implied))
}

/// `--dry-run` and its options (train, sft, dpo).
#[derive(Args, Clone, Debug)]
struct PlanFlags {
    /// Resolve everything, print the plan and the memory estimate, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// How --dry-run prints the plan: text, or json (one object on stdout).
    #[arg(long, value_enum, default_value = "text", requires = "dry_run")]
    format: PlanFormat,
    /// Memory of one device for the --dry-run verdict, e.g. 80GB or 141GB
    /// (default: 80 GB per GPU; on CPU this machine's RAM).
    #[arg(long, value_name = "SIZE", requires = "dry_run")]
    device_memory: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every stage of a chained recipe (SFT then DPO), or the one stage of a handbook config.
    Train {
        recipe: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
        #[command(flatten)]
        plan: PlanFlags,
        /// Rerun stages whose output_dir already holds a finished model.
        #[arg(long)]
        force: bool,
    },
    /// One SFT stage from a handbook-style config.
    Sft {
        config: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
        #[command(flatten)]
        plan: PlanFlags,
    },
    /// One DPO stage from a handbook-style config.
    Dpo {
        config: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
        #[command(flatten)]
        plan: PlanFlags,
    },
    /// Fetch the models and datasets a recipe names from the Hugging Face Hub
    /// into its cache (only what is not already local; HF_TOKEN for gated repos).
    Download {
        recipe: PathBuf,
        /// List the files that would be downloaded, with their sizes; fetch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Override a recipe key: KEY=VALUE (as for train).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// No progress bars, only the final report and errors.
        #[arg(long)]
        quiet: bool,
    },
    /// Evaluation only (eval split), metrics with the eval_ prefix.
    Eval {
        config: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// What the trainer sees: rendered texts and token ids, one JSON object per row.
    Data {
        config: PathBuf,
        /// Split to show (default: the first train split).
        #[arg(long)]
        split: Option<String>,
        /// Show at most N rows.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Answer prompts with a model folder (final model or checkpoint) and its chat template.
    Generate {
        #[arg(long)]
        model: PathBuf,
        /// One user turn; without it (and without --prompts), an interactive chat.
        #[arg(long, conflicts_with = "prompts")]
        prompt: Option<String>,
        /// JSONL of `{"prompt": ...}` or `{"messages": [...]}` lines.
        #[arg(long, value_name = "FILE")]
        prompts: Option<PathBuf>,
        /// Where --prompts answers go (JSONL; default stdout).
        #[arg(long, value_name = "FILE", requires = "prompts")]
        output: Option<PathBuf>,
        #[arg(long, default_value_t = 256)]
        max_new_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// 0 = no top-k filter.
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(flatten)]
        device: DeviceFlags,
    },
    /// Hyperparameter ablations: every combination of the grid's values, one
    /// run each in output_dir/sweep/KEY=VALUE,.../, then a report.
    Sweep {
        recipe: PathBuf,
        /// A recipe key and its values (YAML each; adds to or replaces the
        /// recipe's `sweep:` section). Repeat for a product of grids.
        #[arg(long = "grid", value_name = "KEY=V1,V2")]
        grid: Vec<String>,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Compare finished runs: report.md (a table) and PNG plots.
    Report {
        /// Run folders (with metrics.jsonl), or folders of runs such as output_dir/sweep.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where report.md and the plots go.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// The coordinator of a multi-node run (burn-collective's global
    /// orchestrator): start it once, then `align train ... --num-nodes N
    /// --global-address ws://THIS_HOST:PORT` on every node.
    Orchestrator {
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// Print a Hugging Face Gemma folder's shape, parameter count and the
    /// language-model loss of one forward pass over a sample text.
    Inspect {
        #[arg(long)]
        model: PathBuf,
        /// Text to score (default: a short sample conversation rendered with the chat template).
        #[arg(long)]
        text: Option<String>,
    },
}

fn main() -> ExitCode {
    align::backend::keep_freed_memory();
    let cli = Cli::parse();
    // `ALIGN_CPU_KERNELS` is read once, by the first kernel: a bad value is
    // said here, before any work.
    if let Err(error) = align_kernels::CpuKernels::from_env() {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Orchestrator { port } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the orchestrator's runtime")?;
            eprintln!("orchestrator listening on port {port}");
            runtime.block_on(burn_collective::start_global_orchestrator(port));
            Ok(())
        }
        Command::Inspect { model, text } => {
            let report = align::model::inspect::inspect(&model, text.as_deref())
                .with_context(|| format!("inspecting {}", model.display()))?;
            println!("{report}");
            Ok(())
        }
        Command::Train {
            recipe,
            flags,
            plan,
            force,
        } => train(&recipe, &flags, None, &plan, force),
        Command::Sft {
            config,
            flags,
            plan,
        } => train(&config, &flags, Some(StageKind::Sft), &plan, true),
        Command::Dpo {
            config,
            flags,
            plan,
        } => train(&config, &flags, Some(StageKind::Dpo), &plan, true),
        Command::Download {
            recipe,
            dry_run,
            set,
            quiet,
        } => download(&recipe, &set, dry_run, quiet),
        Command::Eval { config, flags } => {
            if let Some(devices) = &flags.devices
                && devices.contains(',')
            {
                bail!("--devices {devices}: align eval runs on one device");
            }
            let flags = with_recipe_devices(&config, &flags, None)?;
            on_backend(
                &flags,
                Eval {
                    config: &config,
                    flags: &flags,
                },
            )
        }
        Command::Data {
            config,
            split,
            limit,
            set,
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let summary =
                align::data::dump_rows(&config, &set, None, split.as_deref(), limit, &mut out)?;
            out.flush()?;
            eprintln!("{summary}");
            Ok(())
        }
        Command::Generate {
            model,
            prompt,
            prompts,
            output,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            device,
        } => {
            let flags = RunFlags {
                backend: device.backend,
                devices: device.devices,
                ..Default::default()
            };
            let settings = SamplingSettings {
                temperature,
                top_k,
                top_p,
                seed,
                max_new_tokens,
            };
            let task = Generate {
                model: &model,
                prompt,
                prompts,
                output,
                settings,
            };
            on_backend(&flags, task)
        }
        Command::Sweep {
            recipe,
            grid,
            flags,
        } => sweep(&recipe, &grid, &flags),
        Command::Report { dirs, out } => {
            let report = align::report::write_report(&dirs, &out)?;
            println!("{}", report.markdown.display());
            Ok(())
        }
    }
}

/// Runs the stages of a recipe (or one handbook config read as `kind`).
fn train(
    path: &Path,
    flags: &RunFlags,
    kind: Option<StageKind>,
    plan: &PlanFlags,
    force: bool,
) -> Result<()> {
    if plan.dry_run {
        return dry_run(path, flags, kind, plan);
    }
    let flags = &with_recipe_devices(path, flags, kind)?;
    let task = Train {
        path,
        flags,
        kind,
        force,
    };
    on_backend(flags, task)
}

/// `align download`: every hub repo the recipe reads, into the cache.
fn download(path: &Path, set: &[String], dry_run: bool, quiet: bool) -> Result<()> {
    use align::data::hub::{HubSettings, download_recipe, progress::Display};
    let recipe =
        Recipe::load_as(path, set, None).with_context(|| format!("reading {}", path.display()))?;
    let settings = HubSettings::from_env();
    let report = download_recipe(
        &recipe.stages,
        &settings,
        Display::for_stderr(quiet),
        dry_run,
    )?;
    print!("{report}");
    if dry_run {
        println!(
            "total: {} to download into {}",
            indicatif::HumanBytes(report.bytes()),
            settings.cache_dir.display()
        );
    }
    Ok(())
}

/// `--dry-run`: the plan of every stage, as text or one JSON object.
fn dry_run(path: &Path, flags: &RunFlags, kind: Option<StageKind>, plan: &PlanFlags) -> Result<()> {
    let memory_bytes = plan.device_memory.as_deref().map(parse_bytes).transpose()?;
    let request = PlanRequest {
        path,
        overrides: &flags.set,
        kind,
        devices: DeviceRequest {
            devices: flags.devices.clone(),
            backend: flags.backend.clone(),
            memory_bytes,
        },
        quiet: flags.quiet,
    };
    let made = make_plan(&request).with_context(|| format!("planning {}", path.display()))?;
    for warning in &made.warnings {
        eprintln!("warning: {warning}");
    }
    match plan.format {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&made)?),
        PlanFormat::Text => print!("{}", align::plan::report::render(&made)),
    }
    Ok(())
}

/// Plans the whole sweep (every grid value checked) before the first run.
fn sweep(recipe: &Path, grid: &[String], flags: &RunFlags) -> Result<()> {
    if let Some(devices) = &flags.devices {
        bail!("--devices {devices}: align sweep runs on one device (align train takes --devices)");
    }
    let grid = align::sweep::grid_for(recipe, grid)?;
    let plan = align::sweep::plan(recipe, &flags.set, grid)?;
    let outcome = on_backend(flags, Sweep { plan: &plan, flags })?;
    if let Some(report) = &outcome.report {
        println!("{}", report.markdown.display());
    }
    let failures = outcome.failures();
    if !failures.is_empty() {
        bail!(
            "{} of {} runs failed: {}",
            failures.len(),
            outcome.runs.len(),
            failures.join("; ")
        );
    }
    Ok(())
}

/// A command's work, written once over the autodiff backend `A` and run
/// on the backend and devices the user chose ([`on_backend`]).
trait OnBackend {
    type Output;
    fn run<A: TrainBackend>(self, cluster: Cluster<A::Device>) -> Result<Self::Output>;
}

/// Runs `task` on `--backend` (else the one `--devices` implies): CPU
/// replicas share the cores; CUDA needs the `cuda` feature.
fn on_backend<T: OnBackend>(flags: &RunFlags, task: T) -> Result<T::Output> {
    match backend_name(flags)?.as_deref() {
        None | Some("flex") | Some("cpu") | Some("ndarray") => {
            let cluster = cluster::<CpuTrain>(flags)?;
            align::backend::share_cores_among_replicas(cluster.devices.len());
            eprintln!("CPU kernels: {}", align_kernels::cpu_kernels().in_use());
            task.run::<CpuTrain>(cluster)
        }
        Some("cuda") => on_cuda(flags, task),
        Some(other) => bail!("--backend {other}: expected flex (CPU) or cuda"),
    }
}

#[cfg(feature = "cuda")]
fn on_cuda<T: OnBackend>(flags: &RunFlags, task: T) -> Result<T::Output> {
    use align::backend::CudaTrain;
    task.run::<CudaTrain>(cluster::<CudaTrain>(flags)?)
}

#[cfg(not(feature = "cuda"))]
fn on_cuda<T: OnBackend>(_: &RunFlags, _: T) -> Result<T::Output> {
    bail!(
        "--backend cuda: this binary was built without the `cuda` feature (cargo build --release --features cuda)"
    )
}

/// `align train|sft|dpo`: the stages, then the end-of-run report (its
/// sample answer on the first device of the run).
struct Train<'a> {
    path: &'a Path,
    flags: &'a RunFlags,
    kind: Option<StageKind>,
    force: bool,
}

impl OnBackend for Train<'_> {
    type Output = ();
    fn run<A: TrainBackend>(self, cluster: Cluster<A::Device>) -> Result<()> {
        let options = self.flags.options(false);
        let set = &self.flags.set;
        let results =
            run_recipe_on::<A>(self.path, set, self.kind, &options, self.force, &cluster)?;
        let device = &cluster.devices[0];
        print!(
            "{}",
            align::summary::report::<A::InnerBackend>(&results, device)
        );
        Ok(())
    }
}

/// `align eval`: the eval line of each stage's model as it is.
struct Eval<'a> {
    config: &'a Path,
    flags: &'a RunFlags,
}

impl OnBackend for Eval<'_> {
    type Output = ();
    fn run<A: TrainBackend>(self, cluster: Cluster<A::Device>) -> Result<()> {
        let options = self.flags.options(true);
        let device = &cluster.devices[0];
        let results = run_recipe::<A>(self.config, &self.flags.set, None, &options, true, device)?;
        for result in &results {
            if let StageResult::Ran(outcome) = result
                && let Some(eval) = outcome.history.last()
            {
                println!("{}", serde_json::Value::Object(eval.clone()));
            }
        }
        Ok(())
    }
}

/// `align generate`: answers from a model folder.
struct Generate<'a> {
    model: &'a Path,
    prompt: Option<String>,
    prompts: Option<PathBuf>,
    output: Option<PathBuf>,
    settings: SamplingSettings,
}

impl OnBackend for Generate<'_> {
    type Output = ();
    fn run<A: TrainBackend>(self, cluster: Cluster<A::Device>) -> Result<()> {
        let [device] = &cluster.devices[..] else {
            bail!("align generate runs on one device");
        };
        let generator = Generator::<A::InnerBackend>::load(self.model, device)?;
        let settings = &self.settings;
        match (self.prompt, self.prompts) {
            (Some(prompt), _) => {
                answer_one(&generator, &prompt, settings, &mut std::io::stdout())?;
            }
            (None, Some(file)) => {
                let mut out: Box<dyn Write> = match &self.output {
                    Some(path) => Box::new(std::io::BufWriter::new(
                        std::fs::File::create(path)
                            .with_context(|| format!("creating {}", path.display()))?,
                    )),
                    None => Box::new(std::io::stdout()),
                };
                let answered = answer_file(&generator, &file, settings, &mut out)?;
                out.flush()?;
                eprintln!("{answered} prompts answered");
            }
            (None, None) => chat(&generator, settings)?,
        }
        Ok(())
    }
}

/// `align sweep`: every run of the plan on one device.
struct Sweep<'a> {
    plan: &'a align::sweep::SweepPlan,
    flags: &'a RunFlags,
}

impl OnBackend for Sweep<'_> {
    type Output = align::sweep::SweepOutcome;
    fn run<A: TrainBackend>(self, cluster: Cluster<A::Device>) -> Result<Self::Output> {
        let options = self.flags.options(false);
        Ok(align::sweep::run_sweep::<A>(
            self.plan,
            &options,
            &cluster.devices[0],
        )?)
    }
}
