//! Starting and stopping the real servers.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Children to kill and directories to remove when the process exits.
static CLEANUP: Mutex<Vec<(u32, Option<PathBuf>)>> = Mutex::new(Vec::new());

extern "C" fn cleanup_at_exit() {
    let Ok(mut list) = CLEANUP.lock() else { return };
    for (pid, _) in list.iter() {
        // SIGQUIT: PostgreSQL's immediate shutdown; nats-server just exits.
        unsafe { libc::kill(*pid as i32, libc::SIGQUIT) };
    }
    for (pid, dir) in list.drain(..) {
        wait_gone(pid, Duration::from_secs(3));
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn register_cleanup(pid: u32, dir: Option<PathBuf>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| unsafe {
        libc::atexit(cleanup_at_exit);
    });
    if let Ok(mut list) = CLEANUP.lock() {
        list.push((pid, dir));
    }
}

fn unregister_cleanup(pid: u32) {
    if let Ok(mut list) = CLEANUP.lock() {
        list.retain(|(p, _)| *p != pid);
    }
}

fn wait_gone(pid: u32, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r == pid as i32 || (r == -1 && unsafe { libc::kill(pid as i32, 0) } != 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Keeps a server for the rest of the process; the exit handler stops it.
pub(crate) fn keep_forever<T: HasUrl>(server: T) -> String {
    let url = server.url();
    std::mem::forget(server);
    url
}

pub(crate) trait HasUrl {
    fn url(&self) -> String;
}

/// Servers are spawned from a thread that never ends, because the kernel's parent-death
/// signal fires when the spawning *thread* exits, and test threads come and go.
fn spawn_on_keeper(mut command: Command) -> anyhow::Result<Child> {
    use std::sync::mpsc;
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);
    let mut keeper = KEEPER
        .lock()
        .map_err(|_| anyhow::anyhow!("keeper lock poisoned"))?;
    if keeper.is_none() {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("testkit-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                loop {
                    std::thread::park();
                }
            })?;
        *keeper = Some(tx);
    }
    unsafe {
        command.pre_exec(|| {
            // Die with the test process even if it is killed without running exit handlers.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .as_ref()
        .context("keeper thread")?
        .send((command, reply_tx))
        .map_err(|_| anyhow::anyhow!("keeper thread is gone"))?;
    drop(keeper);
    Ok(reply_rx.recv()??)
}

/// Where servers of ours listen: below Linux's ephemeral range (32768–60999), which the
/// kernel draws clients' source ports from. A client reconnecting to a server that is down
/// can otherwise get the server's own port as its source port, connect to itself, and keep
/// the restarted server from binding ("Address already in use").
pub const SERVER_PORTS: std::ops::Range<u16> = 20000..32768;

/// A port in [`SERVER_PORTS`] that nothing listens on now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let span = u64::from(SERVER_PORTS.end - SERVER_PORTS.start);
    for _ in 0..1000 {
        // Each RandomState is freshly keyed: a cheap random number without another crate.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = SERVER_PORTS.start + u16::try_from(h.finish() % span)?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in {SERVER_PORTS:?}")
}

/// Runs `launch` on a free port, and on a fresh one again when another process took the
/// chosen port between the check and the server's own bind (up to five tries).
fn on_a_free_port(mut launch: impl FnMut(u16) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match launch(free_port()?) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("the server did not start")))
}

fn wait_for_port(
    port: u16,
    child: &mut Child,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during start-up with {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not listen on port {port} within {timeout:?}")
}

/// The user PostgreSQL runs as when we are root (initdb refuses root).
fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!(
            "running as root and there is no `postgres` user to run PostgreSQL as; install the postgresql package"
        );
    }
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn find_pg_bindir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("HAVEN_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = which("initdb").and_then(|p| p.parent().map(Path::to_path_buf)) {
        // Debian links initdb into /usr/local/bin on some images; use its real directory.
        let real = std::fs::canonicalize(dir.join("initdb")).ok();
        return Ok(real
            .and_then(|r| r.parent().map(Path::to_path_buf))
            .unwrap_or(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .context("PostgreSQL server binaries not found: install the postgresql package or set HAVEN_PG_BINDIR")
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(binary))
            .find(|p| p.is_file())
    })
}

fn find_nats_server() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("HAVEN_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = which("nats-server") {
        return Ok(path);
    }
    let workspace =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.haven/tools/venv/bin/nats-server");
    if workspace.is_file() {
        return Ok(workspace);
    }
    bail!("nats-server not found: run ./deploy/test (it installs one), or set HAVEN_NATS_SERVER")
}

/// A throwaway PostgreSQL cluster, which a test may crash and start again on the same port.
pub struct PostgresServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    bindir: PathBuf,
    user: Option<(u32, u32)>,
    settings: Vec<(String, String)>,
}

impl HasUrl for PostgresServer {
    fn url(&self) -> String {
        self.url()
    }
}

impl PostgresServer {
    /// `initdb` in a temporary directory and start `postgres` on a free port, tuned for
    /// tests (no fsync: a crashed test cluster is thrown away anyway).
    pub fn start() -> anyhow::Result<PostgresServer> {
        Self::start_with(&[
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
        ])
    }

    /// As [`PostgresServer::start`] with PostgreSQL's own durable defaults, for benchmarks
    /// whose figures must hold for production.
    pub fn start_durable() -> anyhow::Result<PostgresServer> {
        Self::start_with(&[])
    }

    fn start_with(settings: &[(&str, &str)]) -> anyhow::Result<PostgresServer> {
        let bindir = find_pg_bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("haven-pg-")
            .tempdir()?
            .keep();
        let user = postgres_user()?;
        if let Some((uid, gid)) = user {
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
            if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
                bail!("cannot hand {} to the postgres user", dir.display());
            }
        }
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().context("run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut server = PostgresServer {
            child: None,
            dir,
            port: 0,
            bindir,
            user,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        on_a_free_port(|port| {
            server.port = port;
            server.launch()
        })?;
        Ok(server)
    }

    /// Starts `postgres` on `self.port` over the cluster in `self.dir`.
    fn launch(&mut self) -> anyhow::Result<()> {
        let log_path = self.dir.join("postgres.log");
        // A fresh log per start, so "ready" below is this start's.
        let log = std::fs::File::create(&log_path)?;
        if let Some((uid, gid)) = self.user {
            let c = std::ffi::CString::new(log_path.as_os_str().as_encoded_bytes())?;
            unsafe { libc::chown(c.as_ptr(), uid, gid) };
        }
        let mut postgres = Command::new(self.bindir.join("postgres"));
        postgres
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=400",
                "-c",
                "shared_buffers=128MB",
            ])
            .args(
                self.settings
                    .iter()
                    .flat_map(|(k, v)| ["-c".to_owned(), format!("{k}={v}")]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some((uid, gid)) = self.user {
            postgres.uid(uid).gid(gid);
        }
        let mut child = spawn_on_keeper(postgres)?;
        register_cleanup(child.id(), Some(self.dir.clone()));
        if let Err(e) = wait_for_log(
            &log_path,
            "ready to accept connections",
            &mut child,
            Duration::from_secs(60),
        ) {
            unregister_cleanup(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.child = Some(child);
        Ok(())
    }

    /// A PostgreSQL program (`pgbench`, `psql`, ...) of the same installation.
    pub fn program(name: &str) -> anyhow::Result<PathBuf> {
        Ok(find_pg_bindir()?.join(name))
    }

    /// A superuser URL to the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port it listens on (always in [`SERVER_PORTS`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server the way a crash does: immediate shutdown (SIGQUIT), no checkpoint;
    /// the next start runs crash recovery.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            wait_gone(child.id(), Duration::from_secs(10));
            let _ = child.try_wait();
            unregister_cleanup(child.id());
        }
    }

    /// Starts the server again on the same port over the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for_log(
    path: &Path,
    needle: &str,
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(file) = std::fs::File::open(path)
            && BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains(needle))
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(path).unwrap_or_default();
            bail!("server exited during start-up with {status}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "server not ready within {timeout:?}; see {}",
        path.display()
    )
}

/// A `nats-server -js` of its own, which a test may kill and start again on the same port
/// with the same store, as a real outage would.
pub struct NatsServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    binary: PathBuf,
    /// The server configuration with one nkey user per process, when started secured.
    config: Option<PathBuf>,
}

impl HasUrl for NatsServer {
    fn url(&self) -> String {
        self.url()
    }
}

impl NatsServer {
    pub fn start() -> anyhow::Result<NatsServer> {
        Self::start_with(false)
    }

    /// A server that admits only the processes' nkey users, each with the permissions
    /// `haven_bus::auth` gives it (under any test prefix); [`NatsServer::creds`] has their
    /// seeds.
    pub fn start_secured() -> anyhow::Result<NatsServer> {
        Self::start_with(true)
    }

    fn start_with(secured: bool) -> anyhow::Result<NatsServer> {
        let binary = find_nats_server()?;
        let dir = tempfile::Builder::new()
            .prefix("haven-nats-")
            .tempdir()?
            .keep();
        let config = if secured {
            Some(haven_bus::auth::write_credentials(
                &dir.join("creds"),
                haven_bus::auth::Naming::AnyPrefix,
            )?)
        } else {
            None
        };
        let mut server = NatsServer {
            child: None,
            dir,
            port: 0,
            binary,
            config,
        };
        on_a_free_port(|port| {
            server.port = port;
            server.launch()
        })?;
        Ok(server)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("nats.log"))?;
        let mut cmd = Command::new(&self.binary);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-sd",
        ])
        .arg(self.dir.join("store"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        let mut child = spawn_on_keeper(cmd)?;
        register_cleanup(child.id(), Some(self.dir.clone()));
        if let Err(e) = wait_for_port(
            self.port,
            &mut child,
            "nats-server",
            Duration::from_secs(30),
        ) {
            unregister_cleanup(child.id());
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The seed file `user` connects with (`HAVEN_NATS_CREDS`), on a secured server.
    pub fn creds(&self, user: haven_bus::auth::BusUser) -> PathBuf {
        haven_bus::auth::seed_file(&self.dir.join("creds"), user)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            unregister_cleanup(child.id());
        }
    }

    /// Starts the server again on the same port with the same JetStream store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch()
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is read or answered,
    /// as with a server stuck in a long pause or a network that drops packets silently.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server run again (SIGCONT); it then reads everything sent meanwhile.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn find_moto_server() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("HAVEN_MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let workspace =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.haven/tools/venv/bin/moto_server");
    if workspace.is_file() {
        return Ok(workspace);
    }
    if let Some(path) = which("moto_server") {
        return Ok(path);
    }
    bail!("moto_server not found: run ./deploy/test (it installs moto), or set HAVEN_MOTO_SERVER")
}

/// A real S3 protocol server (moto's `moto_server`, from PyPI) on a free loopback port:
/// buckets, multipart uploads and presigned URLs as S3 serves them. Any credentials work.
pub struct S3Server {
    child: Option<Child>,
    port: u16,
}

impl HasUrl for S3Server {
    fn url(&self) -> String {
        self.endpoint()
    }
}

impl S3Server {
    pub fn start() -> anyhow::Result<S3Server> {
        let binary = find_moto_server()?;
        let mut server = S3Server {
            child: None,
            port: 0,
        };
        on_a_free_port(|port| {
            let mut cmd = Command::new(&binary);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = spawn_on_keeper(cmd)?;
            register_cleanup(child.id(), None);
            if let Err(e) = wait_for_port(port, &mut child, "moto_server", Duration::from_secs(60))
            {
                unregister_cleanup(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            server.port = port;
            server.child = Some(child);
            Ok(())
        })?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, for `HAVEN_OBJECT_STORE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            unregister_cleanup(child.id());
        }
    }
}
