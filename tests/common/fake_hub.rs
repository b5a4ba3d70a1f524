//! A stand-in for the Hugging Face Hub on 127.0.0.1, speaking the part of
//! its protocol the downloads use: the repo file list
//! (`/api/<models|datasets>/<id>/revision/<rev>`), file resolution
//! (`/<id>/resolve/<rev>/<file>`, `/datasets/<id>/resolve/...`) with the
//! `X-Repo-Commit`, `ETag`/`X-Linked-Etag` and `Range`/`Content-Range`
//! headers, large files redirected to a content store (`/cdn/<etag>`) as
//! the hub does, and its refusals (`X-Error-Code: GatedRepo`,
//! `RepoNotFound`, `EntryNotFound`). Every request is recorded, and one
//! file's first transfer can be cut half way, as a dropped connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One repo the fake hub serves.
#[derive(Clone)]
pub struct FakeRepo {
    /// `models` or `datasets`.
    pub kind: &'static str,
    pub id: String,
    pub files: Vec<(String, Vec<u8>)>,
    /// Gated: files need `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// A recorded request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

pub struct FakeHub {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// A file whose next whole transfer stops after half its bytes.
    cut: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The commit every fake repo is at.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// The blob name (etag) of `bytes`.
pub fn etag(bytes: &[u8]) -> String {
    format!(
        "{:016x}{:016x}",
        xxhash_rust::xxh3::xxh3_64(bytes),
        bytes.len()
    )
}

impl FakeHub {
    pub fn start(repos: Vec<FakeRepo>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cut: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let repos = Arc::new(repos);
        let thread = {
            let (seen, stop, url, cut) = (seen.clone(), stop.clone(), url.clone(), cut.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (repos, seen, url, cut) =
                        (repos.clone(), seen.clone(), url.clone(), cut.clone());
                    std::thread::spawn(move || serve(stream, &repos, &seen, &url, &cut));
                }
            })
        };
        FakeHub {
            url,
            seen,
            cut,
            stop,
            thread: Some(thread),
        }
    }

    /// The next whole transfer of `file` sends half of it and hangs up.
    pub fn cut_once(&self, file: &str) {
        *self.cut.lock().expect("lock") = Some(file.to_string());
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn reply(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Reply {
    Reply {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        body,
    }
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({ "error": message })
        .to_string()
        .into_bytes();
    reply(status, &[("X-Error-Code", code.to_string())], body)
}

fn serve(
    stream: TcpStream,
    repos: &[FakeRepo],
    seen: &Mutex<Vec<Seen>>,
    url: &str,
    cut: &Mutex<Option<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut range, mut auth) = (None, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_string()),
                "authorization" => auth = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    seen.lock().expect("lock").push(Seen {
        path: path.clone(),
        range: range.clone(),
        auth: auth.clone(),
    });
    let answer = route(&path, range.as_deref(), auth.as_deref(), repos, url);
    let whole = range.as_deref().is_none_or(|r| r == "bytes=0-");
    let cut_here = {
        let mut cut = cut.lock().expect("lock");
        let blob_of_cut = cut.as_ref().and_then(|file| {
            let bytes = repos
                .iter()
                .flat_map(|r| r.files.iter())
                .find(|(n, _)| n == file)?;
            Some(format!("/cdn/{}", etag(&bytes.1)))
        });
        let hit = whole && blob_of_cut.as_deref() == Some(path.as_str());
        if hit {
            *cut = None;
        }
        hit
    };
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    if method != "HEAD" {
        let sent = if cut_here {
            answer.body.len() / 2
        } else {
            answer.body.len()
        };
        let _ = out.write_all(&answer.body[..sent]);
    }
    let _ = out.flush();
}

fn route(
    path: &str,
    range: Option<&str>,
    auth: Option<&str>,
    repos: &[FakeRepo],
    url: &str,
) -> Reply {
    let path = path.split('?').next().unwrap_or("");
    if let Some(tag) = path.strip_prefix("/cdn/") {
        let blob = repos
            .iter()
            .flat_map(|r| r.files.iter())
            .find(|(_, bytes)| etag(bytes) == tag);
        return match blob {
            Some((_, bytes)) => ranged(bytes, range, Vec::new()),
            None => error(404, "EntryNotFound", "no such blob"),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/") {
        let Some((kind, rest)) = rest.split_once('/') else {
            return error(404, "RepoNotFound", "Repository not found");
        };
        let Some((id, _revision)) = rest.split_once("/revision/") else {
            return error(404, "RepoNotFound", "Repository not found");
        };
        return match repos.iter().find(|r| r.kind == kind && r.id == id) {
            Some(repo) => {
                let siblings: Vec<_> = repo
                    .files
                    .iter()
                    .map(
                        |(name, bytes)| serde_json::json!({"rfilename": name, "size": bytes.len()}),
                    )
                    .collect();
                let body = serde_json::json!({"id": id, "sha": COMMIT, "siblings": siblings});
                reply(
                    200,
                    &[("Content-Type", "application/json".into())],
                    body.to_string().into_bytes(),
                )
            }
            None => error(401, "RepoNotFound", "Repository not found"),
        };
    }
    let (kind, rest) = match path.strip_prefix("/datasets/") {
        Some(rest) => ("datasets", rest),
        None => ("models", path.trim_start_matches('/')),
    };
    let Some((id, rest)) = rest.split_once("/resolve/") else {
        return error(404, "RepoNotFound", "Repository not found");
    };
    let Some(repo) = repos.iter().find(|r| r.kind == kind && r.id == id) else {
        return error(401, "RepoNotFound", "Repository not found");
    };
    if let Some(token) = &repo.token
        && auth != Some(format!("Bearer {token}").as_str())
    {
        let message = format!(
            "Access to model {id} is restricted. You must have access to it and be authenticated to access it."
        );
        return error(401, "GatedRepo", &message);
    }
    let file = rest.split_once('/').map(|(_, f)| f).unwrap_or("");
    let Some((_, bytes)) = repo.files.iter().find(|(name, _)| name == file) else {
        return error(404, "EntryNotFound", "Entry not found");
    };
    let tag = etag(bytes);
    let commit = ("X-Repo-Commit", COMMIT.to_string());
    if file.ends_with(".safetensors") || file.ends_with(".parquet") {
        return reply(
            302,
            &[
                commit,
                ("X-Linked-Etag", format!("\"{tag}\"")),
                ("X-Linked-Size", bytes.len().to_string()),
                ("ETag", "\"pointer-etag\"".into()),
                ("Location", format!("{url}/cdn/{tag}")),
            ],
            Vec::new(),
        );
    }
    ranged(bytes, range, vec![commit, ("ETag", format!("\"{tag}\""))])
}

/// `bytes`, whole (200) or the `Range: bytes=A-[B]` asked (206).
fn ranged(bytes: &[u8], range: Option<&str>, mut headers: Vec<(&str, String)>) -> Reply {
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return reply(200, &headers, bytes.to_vec());
    };
    let (start, end) = spec.split_once('-').unwrap_or((spec, ""));
    let start: usize = start.parse().unwrap_or(0);
    let end: usize = end.parse().unwrap_or(bytes.len().saturating_sub(1));
    if start >= bytes.len() {
        return reply(416, &headers, Vec::new());
    }
    let end = end.min(bytes.len() - 1);
    headers.push((
        "Content-Range",
        format!("bytes {start}-{end}/{}", bytes.len()),
    ));
    reply(206, &headers, bytes[start..=end].to_vec())
}
