//! The providers a tenant can connect, as a closed set: code that branches on a provider
//! matches over [`Provider`] without a catch-all arm, so a new variant fails to compile until
//! every branch handles it.

use std::fmt;
use std::str::FromStr;

/// One provider a tenant can connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    Shopify,
    Pinterest,
    Klaviyo,
    DynamicMockups,
    Resend,
    SkyPilot,
}

/// A provider key that names no [`Provider`]; the message lists the known keys.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{0}`; expected one of {known}", known = Provider::known_keys())]
pub struct UnknownProvider(pub String);

impl Provider {
    /// Every provider, in setup order.
    pub const ALL: [Provider; 6] = [
        Provider::Shopify,
        Provider::Pinterest,
        Provider::Klaviyo,
        Provider::DynamicMockups,
        Provider::Resend,
        Provider::SkyPilot,
    ];

    /// The key used in URLs, the API, the database and event subjects.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Shopify => "shopify",
            Provider::Pinterest => "pinterest",
            Provider::Klaviyo => "klaviyo",
            Provider::DynamicMockups => "dynamic_mockups",
            Provider::Resend => "resend",
            Provider::SkyPilot => "sky_pilot",
        }
    }

    /// Parses a key exactly as [`Provider::as_str`] spells it.
    pub fn parse(key: &str) -> Result<Provider, UnknownProvider> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == key)
            .ok_or_else(|| UnknownProvider(key.to_owned()))
    }

    fn known_keys() -> String {
        Provider::ALL.map(Provider::as_str).join(", ")
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::parse(s)
    }
}

impl TryFrom<String> for Provider {
    type Error = UnknownProvider;

    /// Lets a row's `provider` text column decode straight into a [`Provider`].
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Provider::parse(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_unknown_ones_are_named() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        let keys: Vec<&str> = Provider::ALL.map(Provider::as_str).to_vec();
        assert_eq!(
            keys,
            [
                "shopify",
                "pinterest",
                "klaviyo",
                "dynamic_mockups",
                "resend",
                "sky_pilot"
            ]
        );
        let e = Provider::parse("mailchimp").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown provider `mailchimp`; expected one of shopify, pinterest, klaviyo, dynamic_mockups, resend, sky_pilot"
        );
        assert!(Provider::parse("Shopify").is_err());
    }
}
