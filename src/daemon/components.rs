//! The daemon's restartable components — the review service and the EHR sender — and applying
//! a new config to the running daemon: in place where possible, by restarting a component
//! where not, followed by a health check whose problems the admin API turns into a rollback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::configs;
use crate::admin::{ComponentState, Health};
use crate::config::Config;
use crate::review;
use crate::store::Store;

/// The review service: its state is built from the config (session lengths, retention,
/// destinations a sign-off queues for), so a change to any of those restarts it.
pub(super) struct ReviewComponent {
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<Result<(), review::ServeError>>>,
}

impl ReviewComponent {
    pub fn off() -> ReviewComponent {
        ReviewComponent {
            stop: None,
            task: None,
        }
    }

    /// Opens the service's state; binding happens in [`ReviewComponent::start`]. Kept apart so
    /// the daemon can open (and migrate) the store before any other thread does.
    pub fn open_state(config: &Config) -> Result<Option<review::AppState>, review::ServeError> {
        if config.review.listen.is_none() {
            return Ok(None);
        }
        review::AppState::open(
            &config.data_dir,
            review::ServiceConfig {
                review: config.review.clone(),
                retention: config.retention.policy,
                destinations: config
                    .sync
                    .destinations
                    .iter()
                    .map(|d| d.name.clone())
                    .collect(),
            },
        )
        .map(Some)
    }

    /// Binds and serves. An error names the address and why; the component is then off.
    pub async fn start(
        config: &Config,
        state: Option<review::AppState>,
        health: &Health,
    ) -> Result<ReviewComponent, String> {
        let (Some(addr), Some(state)) = (config.review.listen, state) else {
            health.set_review(ComponentState::Off);
            return Ok(ReviewComponent::off());
        };
        health.set_review(ComponentState::Starting);
        let server = match review::bind(addr, &config.data_dir, state).await {
            Ok(server) => server,
            Err(e) => {
                health.set_review(ComponentState::Failed);
                return Err(format!("review service: {e}"));
            }
        };
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(review::serve(server, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
        health.set_review(ComponentState::Up);
        Ok(ReviewComponent {
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops serving; requests in flight finish first.
    pub async fn stop(&mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("the review service panicked".into()),
            },
            None => Ok(()),
        }
    }
}

/// The outbox sender thread, with its own stop flag so a config change can restart it.
pub(super) struct SenderComponent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    panicked: Arc<AtomicBool>,
}

impl SenderComponent {
    pub fn off() -> SenderComponent {
        SenderComponent {
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
            panicked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the sender when destinations are configured. A failure to start (a bad
    /// certificate, say) is logged, reported through `health`, and leaves notes safely queued.
    pub fn start(config: &Config, health: Arc<Health>) -> std::io::Result<SenderComponent> {
        if config.sync.destinations.is_empty() {
            health.set_sender(ComponentState::Off);
            return Ok(SenderComponent::off());
        }
        health.set_sender(ComponentState::Starting);
        let stop = Arc::new(AtomicBool::new(false));
        let panicked = Arc::new(AtomicBool::new(false));
        let config = config.clone();
        let (thread_stop, flag) = (stop.clone(), PanicFlag(panicked.clone()));
        let thread = std::thread::Builder::new()
            .name("sender".into())
            .spawn(move || {
                let _flag = flag;
                send_notes(&config, &thread_stop, &health);
            })?;
        Ok(SenderComponent {
            stop,
            thread: Some(thread),
            panicked,
        })
    }

    pub fn panicked(&self) -> bool {
        self.panicked.load(Ordering::SeqCst)
    }

    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops the thread and waits for it off the async threads (it finishes its attempt).
    pub async fn stop(&mut self) {
        self.request_stop();
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the EHR sender panicked");
            }
        }
    }

    /// Blocking variant for the shutdown path.
    pub fn join(&mut self) {
        self.request_stop();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the EHR sender panicked");
            }
        }
    }
}

/// Marks a thread that ended by panicking, so the watchdog stops being fed.
pub(super) struct PanicFlag(pub Arc<AtomicBool>);

impl Drop for PanicFlag {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Runs the outbox sender until `stop`.
fn send_notes(config: &Config, stop: &AtomicBool, health: &Health) {
    let problems = crate::sync::check_destinations(&config.sync);
    if !problems.is_empty() {
        health.set_sender(ComponentState::Failed);
        for problem in problems {
            tracing::error!(problem = %problem, "the EHR sender cannot start; signed notes stay queued");
        }
        return;
    }
    let started = Store::open(&config.data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|store| {
            // Only the public half: the sender checks signed notes, it never signs.
            let public_key = crate::attest::Signer::open(&config.data_dir)?
                .public_key()
                .to_vec();
            health.set_sender(ComponentState::Up);
            crate::sync::run_sender(&store, &config.sync, &public_key, stop)?;
            anyhow::Ok(())
        });
    if let Err(e) = started {
        health.set_sender(ComponentState::Failed);
        tracing::error!(error = %e, "the EHR sender stopped; signed notes stay queued");
    }
}

/// The parts of the running daemon a config change can touch.
pub(super) struct Components {
    pub review: ReviewComponent,
    pub sender: SenderComponent,
    pub health: Arc<Health>,
    /// A batch run (exit when idle) starts no sender.
    pub with_sender: bool,
}

/// Applies `new` to the running daemon and returns what failed its health check (empty:
/// healthy). The config is published first, so threads that read it (processing, retention)
/// use it from their next step.
pub(super) async fn apply(
    components: &mut Components,
    config_tx: &watch::Sender<Arc<Config>>,
    new: Arc<Config>,
) -> Vec<String> {
    let old = config_tx.borrow().clone();
    let changes = configs::changes(&old, &new);
    let mut problems = Vec::new();
    if changes.hot.contains(&"log") {
        if let Err(e) = crate::logging::set_filter(&new.log_level) {
            problems.push(format!("log.level: {e}"));
        }
    }
    config_tx.send_replace(new.clone());
    let sync_changed = changes.restarted.contains(&"sync");
    if changes.restarted.contains(&"review") || sync_changed || changes.hot.contains(&"retention") {
        if let Err(e) = components.review.stop().await {
            tracing::warn!(error = %e, "the review service stopped with an error");
        }
        let started = match ReviewComponent::open_state(&new) {
            Ok(state) => ReviewComponent::start(&new, state, &components.health).await,
            Err(e) => Err(format!("review service: {e}")),
        };
        match started {
            Ok(review) => components.review = review,
            Err(problem) => {
                components.review = ReviewComponent::off();
                components.health.set_review(ComponentState::Failed);
                problems.push(problem);
            }
        }
    }
    if sync_changed && components.with_sender {
        components.sender.stop().await;
        match SenderComponent::start(&new, components.health.clone()) {
            Ok(sender) => components.sender = sender,
            Err(e) => problems.push(format!("cannot start the EHR sender: {e}")),
        }
    }
    problems.extend(health_check(components, new.admin.health_check).await);
    if problems.is_empty() {
        tracing::info!(changes = ?changes, "config applied");
    }
    problems
}

/// Waits until every component has settled (up or off) or the time is up, and lists those
/// that failed or never settled.
async fn health_check(components: &Components, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let health = &components.health;
        let states = [
            ("review service", health.review()),
            ("EHR sender", health.sender()),
        ];
        let failed: Vec<String> = states
            .iter()
            .filter(|(_, s)| *s == ComponentState::Failed)
            .map(|(name, _)| format!("{name} failed to start (the log says why)"))
            .collect();
        if !failed.is_empty() {
            return failed;
        }
        let starting: Vec<&str> = states
            .iter()
            .filter(|(_, s)| *s == ComponentState::Starting)
            .map(|(name, _)| *name)
            .collect();
        if starting.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            return starting
                .into_iter()
                .map(|name| format!("{name} did not become ready within {within:?}"))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
