//! The providers a tenant can connect and the setup wizard's steps (README, "Integrations").

use haven_proto::integrations::v1::{self as pb, AuthType};

/// How a provider is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    OAuth,
    ApiKey,
}

pub use haven_providers::Provider;

/// One entry of the registry.
#[derive(Clone, Copy, Debug)]
pub struct ProviderInfo {
    pub provider: Provider,
    pub name: &'static str,
    pub description: &'static str,
    pub auth: Auth,
    pub required: bool,
    pub setup_order: i32,
    pub docs_url: &'static str,
}

/// A provider's registry entry.
pub const fn info(provider: Provider) -> ProviderInfo {
    let (name, description, auth, required, setup_order, docs_url) = match provider {
        Provider::Shopify => (
            "Shopify",
            "Connect your store for products, orders, and customer data",
            Auth::OAuth,
            true,
            1,
            "https://docs.havenhold.com/integrations/shopify",
        ),
        Provider::Pinterest => (
            "Pinterest",
            "Publish pins, manage boards, and track analytics",
            Auth::OAuth,
            true,
            2,
            "https://docs.havenhold.com/integrations/pinterest",
        ),
        Provider::Klaviyo => (
            "Klaviyo",
            "Email marketing, flows, and customer segments",
            Auth::ApiKey,
            true,
            3,
            "https://docs.havenhold.com/integrations/klaviyo",
        ),
        Provider::DynamicMockups => (
            "Dynamic Mockups",
            "Generate product mockups automatically",
            Auth::ApiKey,
            true,
            4,
            "https://docs.havenhold.com/integrations/dynamic-mockups",
        ),
        Provider::Resend => (
            "Resend",
            "Transactional emails and notifications",
            Auth::ApiKey,
            false,
            5,
            "https://docs.havenhold.com/integrations/resend",
        ),
        Provider::SkyPilot => (
            "Sky Pilot",
            "Digital product delivery for Shopify",
            Auth::ApiKey,
            false,
            6,
            "https://docs.havenhold.com/integrations/sky-pilot",
        ),
    };
    ProviderInfo {
        provider,
        name,
        description,
        auth,
        required,
        setup_order,
        docs_url,
    }
}

/// Every supported provider's entry, in setup order.
pub fn providers() -> impl Iterator<Item = ProviderInfo> {
    Provider::ALL.into_iter().map(info)
}

impl ProviderInfo {
    /// The registry entry as the API returns it.
    pub fn to_proto(&self) -> pb::Provider {
        pb::Provider {
            key: self.provider.as_str().to_owned(),
            name: self.name.to_owned(),
            description: self.description.to_owned(),
            icon: self.provider.as_str().to_owned(),
            auth_type: match self.auth {
                Auth::OAuth => AuthType::Oauth,
                Auth::ApiKey => AuthType::ApiKey,
            } as i32,
            required: self.required,
            setup_order: self.setup_order,
            docs_url: self.docs_url.to_owned(),
        }
    }
}

/// A setup wizard step: integration steps name their provider; configuration steps do not.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub key: &'static str,
    pub label: &'static str,
    pub provider: Option<Provider>,
}

/// The wizard's steps in order.
pub const STEPS: [Step; 6] = [
    Step {
        key: "shopify",
        label: "Connect Shopify",
        provider: Some(Provider::Shopify),
    },
    Step {
        key: "pinterest",
        label: "Connect Pinterest",
        provider: Some(Provider::Pinterest),
    },
    Step {
        key: "klaviyo",
        label: "Connect Klaviyo",
        provider: Some(Provider::Klaviyo),
    },
    Step {
        key: "dynamic_mockups",
        label: "Connect Dynamic Mockups",
        provider: Some(Provider::DynamicMockups),
    },
    Step {
        key: "design_rules",
        label: "Configure Design Rules",
        provider: None,
    },
    Step {
        key: "operator_mode",
        label: "Set Operator Mode",
        provider: None,
    },
];

/// Seed 001's `SetupProgress` keys outside the wizard: reported and settable, not counted.
pub const OTHER_STEPS: [Step; 2] = [
    Step {
        key: "resend",
        label: "Connect Resend",
        provider: Some(Provider::Resend),
    },
    Step {
        key: "import",
        label: "Import Data",
        provider: None,
    },
];

/// Every step: the wizard's, then the others.
fn all_steps() -> impl Iterator<Item = &'static Step> {
    STEPS.iter().chain(OTHER_STEPS.iter())
}

/// Looks a step up by key (wizard or not).
pub fn step(key: &str) -> Option<&'static Step> {
    all_steps().find(|s| s.key == key)
}

/// Every step key, for an error naming the known ones.
pub fn step_keys() -> Vec<&'static str> {
    all_steps().map(|s| s.key).collect()
}

/// The step a provider's connection completes, if it has one.
pub fn step_for_provider(provider: Provider) -> Option<&'static Step> {
    all_steps().find(|s| s.provider == Some(provider))
}
