//! The integration status machine: which status an event leaves a connection in. Pure, so
//! the store only writes what it decides (README, "Integrations").

use crate::store::Status;

/// What happens to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `BeginOAuth`: the user starts (re)authorizing.
    ConnectAttempt,
    /// A code exchange or API key succeeded and was stored.
    Connected,
    /// A connection attempt failed after it began.
    ConnectFailed,
    /// Tokens were renewed.
    RefreshSucceeded,
    /// The provider refused to renew the grant; only the user reconnecting helps.
    RefreshRefused,
    /// The user disconnected.
    Disconnect,
    /// The shop removed the app (Shopify's `app/uninstalled`).
    AppUninstalled,
}

#[cfg(test)]
impl Event {
    pub const ALL: [Event; 7] = [
        Event::ConnectAttempt,
        Event::Connected,
        Event::ConnectFailed,
        Event::RefreshSucceeded,
        Event::RefreshRefused,
        Event::Disconnect,
        Event::AppUninstalled,
    ];
}

/// The status `event` leaves a connection in `status` in. A row that does not exist yet is
/// `Disconnected`, as the API shows a provider never connected.
pub fn next(status: Status, event: Event) -> Status {
    use Event as E;
    use Status as S;
    match (event, status) {
        // A working connection stays usable while the user re-authorizes, and when that
        // re-authorization fails.
        (E::ConnectAttempt | E::ConnectFailed, S::Connected) => S::Connected,
        (E::ConnectAttempt, S::Disconnected | S::Connecting | S::Error | S::Expired) => {
            S::Connecting
        }
        (E::ConnectFailed, S::Disconnected | S::Connecting | S::Error | S::Expired) => S::Error,
        (E::Connected, S::Disconnected | S::Connecting | S::Connected | S::Error | S::Expired) => {
            S::Connected
        }
        // Renewing tokens says nothing new about the connection.
        (
            E::RefreshSucceeded,
            s @ (S::Disconnected | S::Connecting | S::Connected | S::Error | S::Expired),
        ) => s,
        (
            E::RefreshRefused,
            S::Disconnected | S::Connecting | S::Connected | S::Error | S::Expired,
        ) => S::Expired,
        (
            E::Disconnect | E::AppUninstalled,
            S::Disconnected | S::Connecting | S::Connected | S::Error | S::Expired,
        ) => S::Disconnected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Connected as C, Connecting as Cg, Disconnected as D, Error as Er, Expired as Ex};

    /// Rows in `Event::ALL` order, columns in `Status::ALL` order
    /// (disconnected, connecting, connected, error, expired).
    const TABLE: [(Event, [Status; 5]); 7] = [
        (Event::ConnectAttempt, [Cg, Cg, C, Cg, Cg]),
        (Event::Connected, [C, C, C, C, C]),
        (Event::ConnectFailed, [Er, Er, C, Er, Er]),
        (Event::RefreshSucceeded, [D, Cg, C, Er, Ex]),
        (Event::RefreshRefused, [Ex, Ex, Ex, Ex, Ex]),
        (Event::Disconnect, [D, D, D, D, D]),
        (Event::AppUninstalled, [D, D, D, D, D]),
    ];

    #[test]
    fn every_status_and_event() {
        assert_eq!(TABLE.map(|(e, _)| e), Event::ALL);
        for (event, row) in TABLE {
            for (status, expected) in Status::ALL.iter().copied().zip(row) {
                assert_eq!(next(status, event), expected, "{status} + {event:?}");
            }
        }
    }
}
