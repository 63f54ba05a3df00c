//! Who may say what on the bus. Consumers act on the `tenant_id` inside messages, so a
//! message is only as trustworthy as its publisher: each process connects as its own NATS
//! user (an nkey, `HAVEN_NATS_CREDS`) and may publish only its own subjects. The server side
//! of that is [`server_authorization`], which `havenctl nats-auth` and the test kit write
//! into nats-server's configuration.
//!
//! JetStream's API is allowed per stream a process ensures or consumes, not as `$JS.API.>`:
//! a user that may create any stream could make one that republishes onto a subject it may
//! not publish itself.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A process that connects to the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusUser {
    Gateway,
    Integrations,
    Retry,
    Export,
    /// People and tools (havenctl, tests): everything.
    Operator,
}

impl BusUser {
    pub const ALL: [BusUser; 5] = [
        BusUser::Gateway,
        BusUser::Integrations,
        BusUser::Retry,
        BusUser::Export,
        BusUser::Operator,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BusUser::Gateway => "gateway",
            BusUser::Integrations => "integrations",
            BusUser::Retry => "retry",
            BusUser::Export => "export",
            BusUser::Operator => "operator",
        }
    }

    /// The application subjects this user may publish.
    pub fn publishes(self) -> &'static [&'static str] {
        match self {
            // Verified webhooks only.
            BusUser::Gateway => &["haven.webhooks.>"],
            // Its events, and failed work handed to (and results reported to) the queue.
            BusUser::Integrations => &[
                "haven.integrations.events.>",
                "haven.retry.enqueue",
                "haven.retry.enqueues",
                "haven.retry.result",
                "haven.retry.results",
            ],
            // Due work and lifecycle events.
            BusUser::Retry => &["haven.retry.dispatch.>", "haven.retry.events.>"],
            // Its events, and failed statistics variants handed to (and results reported
            // to) the queue.
            BusUser::Export => &[
                "haven.exports.events.>",
                "haven.retry.enqueue",
                "haven.retry.enqueues",
                "haven.retry.result",
                "haven.retry.results",
            ],
            BusUser::Operator => &[">"],
        }
    }

    /// The streams this user ensures or consumes from.
    pub fn streams(self) -> &'static [&'static str] {
        match self {
            BusUser::Gateway => &["WEBHOOKS"],
            BusUser::Integrations => &[
                "INTEGRATIONS_EVENTS",
                "WEBHOOKS",
                "RETRY_COMMANDS",
                "RETRY_EVENTS",
            ],
            BusUser::Retry => &["RETRY_COMMANDS", "RETRY_EVENTS"],
            BusUser::Export => &["EXPORTS_EVENTS", "RETRY_COMMANDS", "RETRY_EVENTS"],
            BusUser::Operator => &[],
        }
    }
}

/// How subjects and stream names look on the server: as they are, or under a prefix
/// (`HAVEN_NATS_PREFIX`, which the test kit gives every test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Plain,
    /// Any one-token prefix: subjects `<p>.haven…`, streams `<p>_NAME`. Stream names cannot
    /// be matched by a partial wildcard, so this allows every stream's API: for test
    /// servers, never production.
    AnyPrefix,
}

fn quoted(list: &[String]) -> String {
    list.iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `user` may publish and subscribe to, as nats-server permission lists.
pub fn permissions(user: BusUser, naming: Naming) -> (Vec<String>, Vec<String>) {
    if user == BusUser::Operator {
        return (vec![">".into()], vec![">".into()]);
    }
    let mut publish: Vec<String> = Vec::new();
    for subject in user.publishes() {
        match naming {
            Naming::Plain => publish.push((*subject).to_owned()),
            Naming::AnyPrefix => publish.push(format!("*.{subject}")),
        }
    }
    publish.push("$JS.API.INFO".into());
    let streams: Vec<String> = match naming {
        Naming::Plain => user.streams().iter().map(|s| (*s).to_owned()).collect(),
        Naming::AnyPrefix => vec!["*".into()],
    };
    for stream in &streams {
        for api in ["STREAM.INFO", "STREAM.CREATE", "STREAM.UPDATE"] {
            publish.push(format!("$JS.API.{api}.{stream}"));
        }
        for api in [
            "CONSUMER.CREATE",
            "CONSUMER.DURABLE.CREATE",
            "CONSUMER.INFO",
            "CONSUMER.MSG.NEXT",
            // Renamed durables replace their old selves (`ConsumerSpec::replacing`).
            "CONSUMER.DELETE",
        ] {
            publish.push(format!("$JS.API.{api}.{stream}.>"));
        }
        publish.push(format!("$JS.ACK.{stream}.>"));
    }
    // Replies (JetStream acks, pulled messages) come to the client's inbox.
    (publish, vec!["_INBOX.>".into()])
}

/// The `authorization { users = [...] }` block for nats-server: one nkey user per process
/// with its permissions. `users` pairs each process with its public nkey (`U…`).
pub fn server_authorization(users: &[(BusUser, String)], naming: Naming) -> String {
    let mut out = String::from("authorization {\n  users = [\n");
    for (user, nkey) in users {
        let (publish, subscribe) = permissions(*user, naming);
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "    {{ nkey: \"{nkey}\", permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }} }} # {}",
            quoted(&publish),
            quoted(&subscribe),
            user.name()
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// The file holding `user`'s seed in a credentials directory.
pub fn seed_file(dir: &Path, user: BusUser) -> PathBuf {
    dir.join(format!("{}.nk", user.name()))
}

/// Writes a credentials directory: a seed per process (`<name>.nk`, readable by the owner
/// only; an existing one is kept, so running this again rotates nothing) and `auth.conf`, the
/// block nats-server includes. Returns the path of `auth.conf`.
pub fn write_credentials(dir: &Path, naming: Naming) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut users = Vec::new();
    for user in BusUser::ALL {
        let path = seed_file(dir, user);
        let pair = match std::fs::read_to_string(&path) {
            Ok(seed) => nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = nkeys::KeyPair::new_user();
                let seed = pair
                    .seed()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                write_private(&path, &seed)?;
                pair
            }
            Err(e) => return Err(e),
        };
        users.push((user, pair.public_key()));
    }
    let conf = dir.join("auth.conf");
    std::fs::write(&conf, server_authorization(&users, naming))?;
    Ok(conf)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_publishes_webhooks_and_nothing_it_could_turn_into_more() {
        let (publish, subscribe) = permissions(BusUser::Gateway, Naming::Plain);
        assert!(publish.contains(&"haven.webhooks.>".to_owned()));
        assert!(!publish.iter().any(|s| s.contains("retry")), "{publish:?}");
        assert!(!publish.contains(&"$JS.API.>".to_owned()));
        assert!(
            publish
                .iter()
                .filter(|s| s.starts_with("$JS.API.STREAM.CREATE"))
                .all(|s| s == "$JS.API.STREAM.CREATE.WEBHOOKS"),
            "{publish:?}"
        );
        assert_eq!(subscribe, ["_INBOX.>"]);
        let (publish, _) = permissions(BusUser::Retry, Naming::AnyPrefix);
        assert!(publish.contains(&"*.haven.retry.dispatch.>".to_owned()));
    }

    #[test]
    fn the_server_block_names_every_user() {
        let block = server_authorization(
            &[
                (BusUser::Gateway, "UGATEWAY".into()),
                (BusUser::Operator, "UOPERATOR".into()),
            ],
            Naming::Plain,
        );
        assert!(block.contains("nkey: \"UGATEWAY\""), "{block}");
        assert!(block.contains("# operator"), "{block}");
        assert!(block.starts_with("authorization {"));
    }
}
