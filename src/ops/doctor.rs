//! `edge-scribe doctor`: checks an installed box and says, for every problem, what to fix.
//!
//! Each check gives one [`Check`]: a status (`ok`, `warn`, `FAIL`), what was found, and the
//! step that fixes it. A FAIL means the box cannot do its work as configured (the daemon would
//! refuse to start, or notes would not be made or delivered); a warning means it works for now
//! but needs attention. [`run_checks`] is also what the admin API's support bundle reports.
//!
//! What it may not do: change anything (it only reads, except that opening the store keeps its
//! usual bookkeeping and that a writability probe creates and removes one empty file), read a
//! record, or put patient data in a check: details carry paths, modes, sizes, dates, counts and
//! key ids.

use std::ffi::CString;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, DestinationKind, DestinationSettings};
use crate::inference;
use crate::models::fetch::{self, Manifest};
use crate::store::key::{self, check_private_file, MasterKey, PrivateFileProblem};
use crate::store::{self, Store};
use crate::sync::tls::{self, TlsFiles};

/// Below this much free space on the data directory's file system, a warning.
const DISK_WARN_BYTES: u64 = 5 << 30;
/// Below this share of the file system free, a warning.
const DISK_WARN_FRACTION: f64 = 0.10;
/// Below this much free space, a failure: a visit's audio and a backup snapshot need room.
const DISK_FAIL_BYTES: u64 = 1 << 30;
/// A certificate expiring within this many days is a warning.
const CERT_WARN_DAYS: i64 = 30;
/// How long a peer may take to accept a TCP connection.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// No clock reading before this can be right: this release was built after it (2026-01-01).
const EARLIEST_PLAUSIBLE_UNIX: i64 = 1_767_225_600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    /// The word printed at the start of a check's line (FAIL in capitals, to stand out).
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. `master key` or `peer ehr-main`.
    pub name: String,
    pub status: Status,
    /// What was found: paths, modes, sizes, dates, never patient data.
    pub detail: String,
    /// What to do about it; `None` when there is nothing to do.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A check from an error whose message reads "what is wrong; what to do" (the style of this
    /// crate's error messages): split there, so the fix stands on its own.
    fn from_error(name: impl Into<String>, status: Status, message: &str) -> Check {
        let (detail, fix) = match message.split_once("; ") {
            Some((detail, fix)) => (detail.to_owned(), fix.to_owned()),
            None => (
                message.to_owned(),
                "correct what the detail names".to_owned(),
            ),
        };
        Check {
            name: name.into(),
            status,
            detail,
            fix: Some(fix),
        }
    }

    /// The one line `edge-scribe doctor` prints for this check.
    pub fn line(&self) -> String {
        let mut line = format!("{:<4} {}: {}", self.status.label(), self.name, self.detail);
        if let Some(fix) = &self.fix {
            line.push_str(" — fix: ");
            line.push_str(fix);
        }
        line
    }
}

/// Whether any check failed.
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// The check for a configuration that did not load, for callers that could not get a
/// [`Config`] to hand to [`run_checks`].
pub fn config_failed(error: &ConfigError) -> Check {
    let file = match error {
        ConfigError::Read { path, .. }
        | ConfigError::Parse { path, .. }
        | ConfigError::Invalid { path, .. } => path.display().to_string(),
    };
    Check::fail(
        "config",
        // One line: the problems of an invalid config are joined.
        error.to_string().replace("\n  - ", "; "),
        format!("correct {file} (see config/edge-scribe.toml for every key) and run doctor again"),
    )
}

/// Every check of an installed box with this configuration, in a fixed order. Takes a few
/// seconds: model files are hashed, and each EHR peer gets up to 3 s to answer.
pub fn run_checks(config: &Config) -> Vec<Check> {
    let mut checks = vec![Check::ok("config", "the configuration loads and validates")];
    checks.push(drafting(config));
    checks.extend(data_dir(&config.data_dir));
    checks.push(disk(&config.data_dir));
    let credentials = store::backup::credentials_dir_from_env();
    let key_ok = master_key(&config.data_dir, credentials.as_deref());
    let key_usable = key_ok.status != Status::Fail;
    checks.push(key_ok);
    checks.extend(secret_files(&config.data_dir));
    checks.extend(store_checks(&config.data_dir, key_usable));
    checks.extend(models(config));
    checks.extend(workers(config));
    for destination in &config.sync.destinations {
        if let Some(files) = &destination.tls {
            checks.push(certificates(&destination.name, files, SystemTime::now()));
        }
    }
    checks.extend(clock(SystemTime::now()));
    for destination in &config.sync.destinations {
        checks.push(peer(destination));
    }
    checks.extend(devices(config));
    for source in &config.replay_sources {
        checks.push(capture(&source.path));
        if let Some(badge) = &source.badge_audio {
            checks.push(capture(badge));
        }
    }
    checks
}

/// Each room's array is a sound card the system offers now. Sound cards are only listed when a
/// room names one (listing asks the audio stack, which may be slow on a box without sound).
fn devices(config: &Config) -> Vec<Check> {
    if config.rooms.is_empty() {
        return Vec::new();
    }
    let cards = if config.rooms.iter().any(|r| r.array.is_some()) {
        crate::capture::sound_cards()
    } else {
        Vec::new()
    };
    config
        .rooms
        .iter()
        .map(|room| {
            let name = format!("room {}", room.name);
            match &room.array {
                None => Check::warn(
                    name,
                    "no array is assigned: this room records nothing",
                    "assign its array: `array = \"<device id>\"` in its [[capture.room]] (the \
                     admin API lists the devices)",
                ),
                Some(array) => match cards.iter().find(|c| &c.id == array) {
                    Some(card) if card.state == "available" => Check::ok(
                        name,
                        format!(
                            "array {array:?}: {} channels at {} Hz",
                            card.channels, card.sample_rate
                        ),
                    ),
                    Some(_) => Check::fail(
                        name,
                        format!("array {array:?} is present but cannot be opened"),
                        "check that the service user is in the audio group and that no other \
                         program holds the device",
                    ),
                    None => Check::fail(
                        name,
                        format!(
                            "array {array:?} is not connected (sound cards now: {})",
                            if cards.is_empty() {
                                "none".to_owned()
                            } else {
                                cards
                                    .iter()
                                    .map(|c| format!("{:?}", c.id))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            }
                        ),
                        "connect the array (check its USB cable and `arecord -l`), or correct \
                         the room's array to one of the listed devices",
                    ),
                },
            }
        })
        .collect()
}

fn drafting(config: &Config) -> Check {
    match crate::draft::context::DraftingContext::load(config) {
        Ok(_) => Check::ok(
            "drafting",
            format!(
                "template {:?}, gap rules{} load",
                config.drafting.template,
                if config.drafting.suggest_codes {
                    " and the ICD-10-CM code set"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => Check::from_error("drafting", Status::Fail, &e.to_string()),
    }
}

fn data_dir(dir: &Path) -> Vec<Check> {
    const NAME: &str = "data dir";
    let meta = match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => meta,
        Ok(_) => {
            return vec![Check::fail(
                NAME,
                format!("{} is not a directory", dir.display()),
                "point storage.data_dir at a directory",
            )]
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return vec![Check::warn(
                NAME,
                format!("{} does not exist yet", dir.display()),
                format!(
                    "start the service once (systemd creates it) or run `install -d -m 700 \
                     -o edge-scribe -g edge-scribe {}`",
                    dir.display()
                ),
            )]
        }
        Err(e) => {
            return vec![Check::fail(
                NAME,
                format!("cannot read {}: {e}", dir.display()),
                "check the path and the permissions of its parent directories",
            )]
        }
    };
    let mut checks = Vec::new();
    match tempfile::Builder::new()
        .prefix(".doctor-probe")
        .tempfile_in(dir)
    {
        Ok(_removed_on_drop) => {}
        Err(e) => checks.push(Check::fail(
            NAME,
            format!("{} is not writable by this user: {e}", dir.display()),
            format!(
                "run `chown -R edge-scribe:edge-scribe {}` (or run doctor as the service user)",
                dir.display()
            ),
        )),
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        checks.push(Check::warn(
            NAME,
            format!(
                "{} has mode {mode:03o}: group or others may enter it",
                dir.display()
            ),
            format!("chmod 700 {}", dir.display()),
        ));
    }
    // A file root made with 0600 there cannot be read by the service user: the daemon then
    // fails at start with a permission error that does not say why.
    let owner = meta.uid();
    let foreign: Vec<String> = owned_files(dir)
        .into_iter()
        .filter(|(_, uid)| *uid != owner)
        .map(|(path, _)| path.display().to_string())
        .collect();
    if !foreign.is_empty() {
        checks.push(Check::fail(
            NAME,
            format!(
                "not owned by the data directory's owner (uid {owner}): {}",
                foreign.join(", ")
            ),
            format!(
                "give them to the service user: `chown edge-scribe:edge-scribe {}`; run \
                 commands that write the store as that user (`sudo -u edge-scribe ...`)",
                foreign.join(" ")
            ),
        ));
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            NAME,
            format!("{} exists, is writable, mode {mode:03o}", dir.display()),
        ));
    }
    checks
}

/// The store's files that exist in `dir`, with their owners.
fn owned_files(dir: &Path) -> Vec<(PathBuf, u32)> {
    let names = [
        store::DB_FILE_NAME.to_owned(),
        format!("{}-wal", store::DB_FILE_NAME),
        format!("{}-shm", store::DB_FILE_NAME),
        store::DATABASE_KEY_FILE_NAME.to_owned(),
        key::KEY_FILE_NAME.to_owned(),
        key::NEW_KEY_FILE_NAME.to_owned(),
        crate::attest::SIGNING_KEY_FILE_NAME.to_owned(),
        crate::attest::PUBLIC_KEY_FILE_NAME.to_owned(),
        store::lock::LOCK_FILE_NAME.to_owned(),
    ];
    names
        .iter()
        .map(|name| dir.join(name))
        .filter_map(|path| {
            let uid = fs::symlink_metadata(&path).ok()?.uid();
            Some((path, uid))
        })
        .collect()
}

fn disk(dir: &Path) -> Check {
    const NAME: &str = "disk";
    // The data directory, or the nearest parent that exists (before the first start).
    let probe = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new("/"));
    let (free, total) = match free_space(probe) {
        Ok(space) => space,
        Err(e) => {
            return Check::warn(
                NAME,
                format!("cannot read the free space of {}: {e}", probe.display()),
                "check the file system with `df -h`",
            )
        }
    };
    let fraction = if total == 0 {
        1.0
    } else {
        free as f64 / total as f64
    };
    let detail = format!(
        "{} free of {} ({:.0}%) on the file system of {}",
        gib(free),
        gib(total),
        fraction * 100.0,
        probe.display()
    );
    let fix = "free space (old pre-restore-* directories in the data directory and old backups \
               are candidates) or move storage.data_dir to a larger disk";
    if free < DISK_FAIL_BYTES {
        Check::fail(NAME, detail, fix)
    } else if free < DISK_WARN_BYTES || fraction < DISK_WARN_FRACTION {
        Check::warn(NAME, detail, fix)
    } else {
        Check::ok(NAME, detail)
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Free bytes (for an unprivileged user) and total bytes of the file system holding `path`.
fn free_space(path: &Path) -> io::Result<(u64, u64)> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stat` points to
    // writable memory sized for a `statvfs`, which the call fills in on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it wrote the whole struct (it was zeroed before, too).
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    let (avail, blocks, frsize) = (
        stat.f_bavail as u64,
        stat.f_blocks as u64,
        stat.f_frsize as u64,
    );
    Ok((avail.saturating_mul(frsize), blocks.saturating_mul(frsize)))
}

fn master_key(data_dir: &Path, credentials: Option<&Path>) -> Check {
    const NAME: &str = "master key";
    let files = store::backup::master_key_files(data_dir, credentials);
    let database_exists = data_dir.join(store::DB_FILE_NAME).is_file();
    let Some(first) = files.first() else {
        let detail = format!(
            "no master key: neither {} nor a systemd credential ($CREDENTIALS_DIRECTORY{})",
            data_dir.join(key::KEY_FILE_NAME).display(),
            if credentials.is_some() {
                " has no master.key"
            } else {
                " is not set"
            }
        );
        return if database_exists {
            Check::fail(
                NAME,
                detail,
                "put the master.key that belongs to this database back from where you keep it \
                 (mode 600, owned by edge-scribe); if the service loads it as a systemd \
                 credential, run doctor with CREDENTIALS_DIRECTORY set to the directory that \
                 holds it. Do not let the daemon create a new one: the database cannot be read \
                 without the old key",
            )
        } else {
            Check::warn(
                NAME,
                detail,
                "none is needed yet: the first start creates one; back it up right after",
            )
        };
    };
    for path in &files {
        if let Err(e) = MasterKey::load(path) {
            return Check::from_error(NAME, Status::Fail, &e.to_string());
        }
    }
    if files.iter().any(|p| p.ends_with(key::NEW_KEY_FILE_NAME)) {
        return Check::warn(
            NAME,
            format!(
                "{} is left from an interrupted key rotation",
                data_dir.join(key::NEW_KEY_FILE_NAME).display()
            ),
            "run `edge-scribe keys rotate` again to finish it, then back up the new master.key",
        );
    }
    let source = if credentials.is_some_and(|dir| first.starts_with(dir)) {
        "systemd credential"
    } else {
        "file, mode 600"
    };
    Check::ok(NAME, format!("{} ({source})", first.display()))
}

/// The box's other secret files, which the daemon refuses when group or others could read them.
fn secret_files(data_dir: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    for name in [
        store::DATABASE_KEY_FILE_NAME,
        crate::attest::SIGNING_KEY_FILE_NAME,
    ] {
        let path = data_dir.join(name);
        let check_name = format!("secret {name}");
        match check_private_file(&path) {
            Ok(()) => checks.push(Check::ok(
                check_name,
                format!("{} is private", path.display()),
            )),
            Err(PrivateFileProblem::Read(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(PrivateFileProblem::Read(e)) => checks.push(Check::fail(
                check_name,
                format!("cannot read {}: {e}", path.display()),
                "check that the service user owns it",
            )),
            Err(PrivateFileProblem::NotAFile) => checks.push(Check::fail(
                check_name,
                format!("{} is not a regular file", path.display()),
                "replace it with the file from your latest backup (`edge-scribe restore`)",
            )),
            Err(PrivateFileProblem::TooOpen { mode }) => checks.push(Check::fail(
                check_name,
                format!(
                    "{} can be read by group or others (mode {mode:03o})",
                    path.display()
                ),
                format!(
                    "chmod 600 {} and find out how it became readable",
                    path.display()
                ),
            )),
        }
    }
    checks
}

fn store_checks(data_dir: &Path, key_usable: bool) -> Vec<Check> {
    const NAME: &str = "store";
    let db = data_dir.join(store::DB_FILE_NAME);
    if !db.is_file() {
        return vec![Check::warn(
            NAME,
            format!("no database at {} yet", db.display()),
            "nothing to do on a new box: the first start creates it; otherwise check \
             storage.data_dir",
        )];
    }
    if !key_usable {
        return vec![Check::warn(
            NAME,
            format!(
                "{} was not opened: the master key check failed",
                db.display()
            ),
            "fix the master key first",
        )];
    }
    let store = match Store::open_existing(data_dir) {
        Ok(store) => store,
        Err(e) => return vec![Check::from_error(NAME, Status::Fail, &e.to_string())],
    };
    let mut checks = Vec::new();
    let schema = store
        .schema_version()
        .map(|v| format!(", schema version {v}"))
        .unwrap_or_default();
    checks.push(Check::ok(
        NAME,
        format!("{} opens with the master key{schema}", db.display()),
    ));
    checks.push(match store.verify_audit() {
        Ok(report) => match report.first_break {
            None => Check::ok(
                "audit log",
                format!("hash chain intact: {} entries", report.checked),
            ),
            Some(broken) => Check::fail(
                "audit log",
                format!(
                    "broken at entry seq {}: {} ({} entries checked)",
                    broken.seq, broken.reason, report.checked
                ),
                "keep this database file as evidence, restore the last good backup \
                 (`edge-scribe restore`), and review who had access to the box",
            ),
        },
        Err(e) => Check::from_error("audit log", Status::Fail, &e.to_string()),
    });
    checks
}

/// `installed.json`, the install record, as both `models fetch` and a local install write it:
/// only the files are read here, and other fields are ignored.
#[derive(Deserialize)]
struct InstallRecord {
    files: Vec<RecordedFile>,
}

#[derive(Deserialize)]
struct RecordedFile {
    path: String,
    sha256: String,
    bytes: u64,
}

fn models(config: &Config) -> Vec<Check> {
    let manifest = Manifest::builtin().ok();
    let mut checks = vec![model(
        manifest.as_ref(),
        &config.models_dir,
        "asr",
        &config.asr_model,
        &inference::asr_model_file(&config.models_dir, &config.asr_model),
    )];
    if config.drafting.use_llm {
        let file = inference::llm_model_file(&config.models_dir, &config.llm_model)
            .unwrap_or_else(|_| config.models_dir.join(&config.llm_model).join("model.gguf"));
        checks.push(model(
            manifest.as_ref(),
            &config.models_dir,
            "llm",
            &config.llm_model,
            &file,
        ));
    }
    checks
}

/// One configured model: installed, its runtime file present, and every file's sha256 equal to
/// its install record and to the manifest's pin where the manifest pins one.
fn model(
    manifest: Option<&Manifest>,
    models_dir: &Path,
    role: &str,
    name: &str,
    runtime_file: &Path,
) -> Check {
    let check_name = format!("model {role}");
    let dir = models_dir.join(name);
    let spec = manifest.and_then(|m| m.get(name));
    let fetch_fix = if spec.is_some() {
        format!(
            "run `edge-scribe models fetch --model {name} --models-dir {}`",
            models_dir.display()
        )
    } else {
        format!(
            "install {name} again from its file (with its sha256), or set models.{role} to an \
             installed model (`edge-scribe models list --models-dir {}`)",
            models_dir.display()
        )
    };
    let reinstall = format!("remove {} and {fetch_fix}", dir.display());
    let text = match fs::read(dir.join(fetch::INSTALLED_FILE)) {
        Ok(text) => text,
        Err(_) => {
            return Check::fail(
                check_name,
                format!("{name} is not installed in {}", models_dir.display()),
                fetch_fix,
            )
        }
    };
    let Ok(record) = serde_json::from_slice::<InstallRecord>(&text) else {
        return Check::fail(
            check_name,
            format!(
                "the install record {} of {name} is damaged",
                dir.join(fetch::INSTALLED_FILE).display()
            ),
            reinstall,
        );
    };
    if !runtime_file.is_file() {
        return Check::fail(
            check_name,
            format!(
                "{name} has no {} to load",
                runtime_file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            reinstall,
        );
    }
    let mut total = 0u64;
    for file in &record.files {
        let path = dir.join(&file.path);
        let pinned = spec
            .and_then(|s| s.files.iter().find(|f| f.to == file.path))
            .and_then(|f| f.sha256.as_deref());
        if let Some(pin) = pinned {
            if pin != file.sha256 {
                return Check::fail(
                    check_name,
                    format!(
                        "{} of {name} was installed with sha256 {}, but this release pins {pin}",
                        file.path,
                        short(&file.sha256)
                    ),
                    reinstall,
                );
            }
        }
        match crate::pipeline::sha256_file(&path) {
            Ok(actual) if actual == file.sha256 => total += file.bytes,
            Ok(actual) => {
                return Check::fail(
                    check_name,
                    format!(
                        "{} of {name} has sha256 {}, expected {}: the file was changed or damaged",
                        path.display(),
                        short(&actual),
                        short(&file.sha256)
                    ),
                    reinstall,
                )
            }
            Err(e) => {
                return Check::fail(
                    check_name,
                    format!("cannot read {}: {e}", path.display()),
                    reinstall,
                )
            }
        }
    }
    Check::ok(
        check_name,
        format!(
            "{name}: {} files, {:.0} MB, every sha256 matches{}",
            record.files.len(),
            total as f64 / 1e6,
            if spec.is_some() {
                " the manifest"
            } else {
                " its install record (not in this release's manifest)"
            }
        ),
    )
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

fn workers(config: &Config) -> Vec<Check> {
    let dir = inference::worker_dir(&config.workers);
    let mut wanted = vec![("asr", inference::ASR_WORKER_BIN)];
    if config.drafting.use_llm {
        wanted.push(("llm", inference::LLM_WORKER_BIN));
    }
    wanted
        .into_iter()
        .map(|(role, bin)| {
            let name = format!("worker {role}");
            let path = dir.join(bin);
            let fix = format!(
                "install {bin} beside the edge-scribe binary ({}) or set workers.dir to where it is",
                dir.display()
            );
            match fs::metadata(&path) {
                Ok(meta) if meta.is_file() && meta.mode() & 0o111 != 0 => {
                    Check::ok(name, path.display().to_string())
                }
                Ok(_) => Check::fail(
                    name,
                    format!("{} is not an executable file", path.display()),
                    format!("chmod 755 {}", path.display()),
                ),
                Err(_) => Check::fail(name, format!("{} is missing", path.display()), fix),
            }
        })
        .collect()
}

/// A destination's TLS files load as the sender loads them (CA, client certificate and key,
/// key matching the certificate), and no certificate is expired or close to it. The sender
/// checks the client certificate's dates only; an expired CA fails every handshake too.
fn certificates(destination: &str, files: &TlsFiles, now: SystemTime) -> Check {
    let name = format!("certificates {destination}");
    if let Err(e) = tls::client_config(files) {
        return Check::from_error(name, Status::Fail, &e.to_string());
    }
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut soonest: Option<(i64, String, bool)> = None;
    let mut paths = vec![&files.ca_cert];
    paths.extend(files.client_cert.as_ref());
    for path in paths {
        let certs = match tls::read_pem_certs(path) {
            Ok(certs) => certs,
            Err(e) => return Check::from_error(name, Status::Fail, &e.to_string()),
        };
        let is_client = Some(path) == files.client_cert.as_ref();
        // The client file's chain is the peer's business past its leaf.
        let take = if is_client { 1 } else { certs.len() };
        for cert in certs.iter().take(take) {
            let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
                return Check::fail(
                    name,
                    format!("a certificate in {} cannot be parsed", path.display()),
                    "re-export it as PEM from the CA that issued it",
                );
            };
            let subject = parsed.subject().to_string();
            let not_before = parsed.validity().not_before.timestamp();
            let not_after = parsed.validity().not_after.timestamp();
            let what = format!("the certificate {subject:?} in {}", path.display());
            if now_s > not_after {
                return Check::fail(
                    name,
                    format!("{what} expired on {} UTC", tls::utc_date_time(not_after)),
                    renew_fix(is_client),
                );
            }
            if now_s < not_before {
                return Check::fail(
                    name,
                    format!(
                        "{what} is not valid before {} UTC",
                        tls::utc_date_time(not_before)
                    ),
                    "check this box's clock (NTP) or wait until that date",
                );
            }
            if soonest.as_ref().is_none_or(|(t, _, _)| not_after < *t) {
                soonest = Some((not_after, what, is_client));
            }
        }
    }
    match soonest {
        Some((not_after, what, is_client)) if not_after - now_s < CERT_WARN_DAYS * 86_400 => {
            Check::warn(
                name,
                format!(
                    "{what} expires on {} UTC, in {} days",
                    tls::utc_date_time(not_after),
                    (not_after - now_s) / 86_400
                ),
                renew_fix(is_client),
            )
        }
        Some((not_after, _, _)) => Check::ok(
            name,
            format!(
                "CA and client files load; the first to expire does so on {} UTC",
                tls::utc_date_time(not_after)
            ),
        ),
        None => Check::ok(name, "CA and client files load"),
    }
}

fn renew_fix(client: bool) -> &'static str {
    if client {
        "have the clinic's CA issue a new certificate for this box and replace client_cert and \
         client_key"
    } else {
        "get the renewed certificate from the EHR team (or the clinic's CA) and replace the file"
    }
}

fn clock(now: SystemTime) -> Vec<Check> {
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut checks = Vec::new();
    if now_s < EARLIEST_PLAUSIBLE_UNIX {
        checks.push(Check::fail(
            "clock",
            format!(
                "the system clock says {} UTC, before this release was made",
                tls::utc_date_time(now_s)
            ),
            "set the time (`timedatectl set-time ...`) and turn on NTP (`timedatectl set-ntp \
             true`): signed notes carry this clock's time and certificates are checked against it",
        ));
    } else {
        checks.push(Check::ok(
            "clock",
            format!("{} UTC", tls::utc_date_time(now_s)),
        ));
    }
    checks.push(match clock_synchronized() {
        Some(true) => Check::ok("clock sync", "the kernel reports the clock synchronized"),
        Some(false) => Check::warn(
            "clock sync",
            "the kernel reports the clock not synchronized to a time server",
            "turn on NTP (`timedatectl set-ntp true`) and check `timedatectl timesync-status` \
             (or `chronyc tracking`); the clinic's time server must be reachable",
        ),
        None => Check::warn(
            "clock sync",
            "the clock's synchronization state cannot be read here",
            "check `timedatectl` by hand",
        ),
    });
    checks
}

/// What the kernel says about NTP discipline: `adjtimex` in read-only mode answers
/// `TIME_ERROR`, or sets `STA_UNSYNC`, while the clock is not synchronized.
fn clock_synchronized() -> Option<bool> {
    // SAFETY: `timex` is a plain C struct for which all-zero bytes are a valid value.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    // modes = 0: read only, so no privilege is needed and nothing changes.
    timex.modes = 0;
    // SAFETY: `timex` is a valid, exclusive, initialised `timex` for the call to read and fill.
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state < 0 {
        return None;
    }
    Some(state != libc::TIME_ERROR && timex.status & libc::STA_UNSYNC == 0)
}

/// Host and port a destination connects to.
fn peer_address(destination: &DestinationSettings) -> Option<(String, u16)> {
    match destination.kind {
        DestinationKind::Fhir => {
            let url = destination.url.as_deref()?;
            let (rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
                (rest, 443)
            } else {
                (url.strip_prefix("http://")?, 80)
            };
            let authority = rest.split(['/', '?', '#']).next()?;
            let authority = authority.rsplit('@').next()?;
            split_host_port(authority, default_port)
        }
        DestinationKind::Hl7 => {
            split_host_port(destination.address.as_deref()?, 0).filter(|(_, port)| *port != 0)
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
    .filter(|(host, _)| !host.is_empty())
}

fn peer(destination: &DestinationSettings) -> Check {
    let name = format!("peer {}", destination.name);
    let Some((host, port)) = peer_address(destination) else {
        return Check::fail(
            name,
            "its address cannot be read from the configuration",
            "set url (fhir) or address = \"host:port\" (hl7) in its [[sync.destination]]",
        );
    };
    let fix = format!(
        "check host and port in [[sync.destination]] {:?}, that the EHR interface is up, and \
         that the firewall lets this box reach {host}:{port}",
        destination.name
    );
    let addrs: Vec<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            return Check::fail(
                name,
                format!("{host} does not resolve: {e}"),
                format!("check the host name and this box's DNS settings; {fix}"),
            )
        }
    };
    let mut last_error = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, PEER_TIMEOUT) {
            Ok(_) => return Check::ok(name, format!("{host}:{port} accepts connections")),
            Err(e) => last_error = Some(e),
        }
    }
    Check::fail(
        name,
        format!(
            "{host}:{port} did not accept a connection within {} s{}",
            PEER_TIMEOUT.as_secs(),
            last_error.map(|e| format!(" ({e})")).unwrap_or_default()
        ),
        fix,
    )
}

fn capture(path: &Path) -> Check {
    let name = format!("capture {}", path.display());
    match hound::WavReader::open(path) {
        Ok(reader) => {
            let spec = reader.spec();
            let seconds = f64::from(reader.duration()) / f64::from(spec.sample_rate.max(1));
            Check::ok(
                name,
                format!(
                    "WAV, {} Hz, {} channel(s), {:.0} s",
                    spec.sample_rate, spec.channels, seconds
                ),
            )
        }
        Err(hound::Error::IoError(e)) => Check::fail(
            name,
            format!("cannot read the file: {e}"),
            "check capture.replay's path and that the service user may read the file",
        ),
        Err(e) => Check::fail(
            name,
            format!("not a readable WAV file ({e})"),
            "point capture.replay at a PCM WAV recording",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_come_from_urls_and_host_ports() {
        assert_eq!(
            split_host_port("ehr.local", 443),
            Some(("ehr.local".into(), 443))
        );
        assert_eq!(
            split_host_port("10.0.0.5:8443", 443),
            Some(("10.0.0.5".into(), 8443))
        );
        assert_eq!(split_host_port("[::1]:2575", 0), Some(("::1".into(), 2575)));
        assert_eq!(split_host_port("[::1]", 80), Some(("::1".into(), 80)));
        assert_eq!(split_host_port(":80", 80), None);
        assert_eq!(split_host_port("host:x", 80), None);
    }

    #[test]
    fn an_error_message_splits_into_what_and_fix() {
        let check = Check::from_error("x", Status::Fail, "the key is open; run chmod 600 k");
        assert_eq!(check.detail, "the key is open");
        assert_eq!(check.fix.as_deref(), Some("run chmod 600 k"));
        assert!(check
            .line()
            .starts_with("FAIL x: the key is open — fix: run chmod 600 k"));
    }

    #[test]
    fn a_clock_before_the_release_fails() {
        let checks = clock(UNIX_EPOCH + Duration::from_secs(1_600_000_000));
        assert_eq!(checks[0].status, Status::Fail);
        let checks = clock(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        assert_eq!(checks[0].status, Status::Ok);
    }
}
