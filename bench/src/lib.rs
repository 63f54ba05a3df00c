//! What the benchmarks share.

/// The median of `v` (the mean of the two middle values for an even count, as psql's 12
/// runs in the export benchmark are); NaN when `v` is empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// The value at fraction `p` (0 to 1) of `sorted`, nearest rank; `sorted` must not be empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The servers a benchmark runs on: a durable PostgreSQL (settings as in production) with a
/// `bench` database, and a `nats-server -js`.
pub struct Servers {
    pub pg: haven_testkit::PostgresServer,
    pub nats: haven_testkit::NatsServer,
    pub db_url: String,
    pub pool: sqlx::PgPool,
}

impl Servers {
    pub async fn start() -> anyhow::Result<Servers> {
        println!("starting PostgreSQL (durable settings) and nats-server -js ...");
        let pg = haven_testkit::PostgresServer::start_durable()?;
        let nats = haven_testkit::NatsServer::start()?;
        let admin = sqlx::PgPool::connect(&pg.url()).await?;
        sqlx::query("CREATE DATABASE bench").execute(&admin).await?;
        let db_url = haven_testkit::with_database(&pg.url(), "bench");
        let pool = sqlx::PgPool::connect(&db_url).await?;
        Ok(Servers {
            pg,
            nats,
            db_url,
            pool,
        })
    }
}

/// The directory of the running benchmark binary, where the release services are too.
pub fn bin_dir() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_default()
}

/// A free loopback address for a service the benchmark starts.
pub fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// Peak resident set of a process (VmHWM), in MiB; NaN when it cannot be read.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// One line of `./bench/run`'s table: a benchmark's headline figure beside its reference.
/// Printed tab-separated after `SUMMARY`, so the runner collects every benchmark's lines.
pub fn summary(benchmark: &str, measure: &str, ours: &str, reference: &str, ratio: &str) {
    println!("SUMMARY\t{benchmark}\t{measure}\t{ours}\t{reference}\t{ratio}");
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert!(median(Vec::new()).is_nan());
        assert_eq!(median(vec![3.0]), 3.0);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        // psql's runs of the 15:29 export run: the middle two are 444,756 and 451,355.
        let psql = vec![
            431_764.0, 466_637.0, 485_488.0, 402_894.0, 460_145.0, 444_756.0, 539_372.0, 403_088.0,
            538_577.0, 423_838.0, 431_625.0, 451_355.0,
        ];
        assert_eq!(median(psql), 448_055.5);
    }
}
