//! The providers a tenant can connect and the setup wizard's steps, as seed 001 lists them.

use haven_proto::integrations::v1::{AuthType, Provider};

/// How a provider is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    OAuth,
    ApiKey,
}

/// One entry of the registry.
#[derive(Clone, Copy, Debug)]
pub struct ProviderInfo {
    pub key: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub auth: Auth,
    pub required: bool,
    pub setup_order: i32,
    pub docs_url: &'static str,
}

/// Every supported provider, in setup order.
pub const PROVIDERS: [ProviderInfo; 6] = [
    ProviderInfo {
        key: "shopify",
        name: "Shopify",
        description: "Connect your store for products, orders, and customer data",
        auth: Auth::OAuth,
        required: true,
        setup_order: 1,
        docs_url: "https://docs.havenhold.com/integrations/shopify",
    },
    ProviderInfo {
        key: "pinterest",
        name: "Pinterest",
        description: "Publish pins, manage boards, and track analytics",
        auth: Auth::OAuth,
        required: true,
        setup_order: 2,
        docs_url: "https://docs.havenhold.com/integrations/pinterest",
    },
    ProviderInfo {
        key: "klaviyo",
        name: "Klaviyo",
        description: "Email marketing, flows, and customer segments",
        auth: Auth::ApiKey,
        required: true,
        setup_order: 3,
        docs_url: "https://docs.havenhold.com/integrations/klaviyo",
    },
    ProviderInfo {
        key: "dynamic_mockups",
        name: "Dynamic Mockups",
        description: "Generate product mockups automatically",
        auth: Auth::ApiKey,
        required: true,
        setup_order: 4,
        docs_url: "https://docs.havenhold.com/integrations/dynamic-mockups",
    },
    ProviderInfo {
        key: "resend",
        name: "Resend",
        description: "Transactional emails and notifications",
        auth: Auth::ApiKey,
        required: false,
        setup_order: 5,
        docs_url: "https://docs.havenhold.com/integrations/resend",
    },
    ProviderInfo {
        key: "sky_pilot",
        name: "Sky Pilot",
        description: "Digital product delivery for Shopify",
        auth: Auth::ApiKey,
        required: false,
        setup_order: 6,
        docs_url: "https://docs.havenhold.com/integrations/sky-pilot",
    },
];

/// Looks a provider up by key.
pub fn provider(key: &str) -> Option<&'static ProviderInfo> {
    PROVIDERS.iter().find(|p| p.key == key)
}

impl ProviderInfo {
    /// The registry entry as the API returns it.
    pub fn to_proto(&self) -> Provider {
        Provider {
            key: self.key.to_owned(),
            name: self.name.to_owned(),
            description: self.description.to_owned(),
            icon: self.key.to_owned(),
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
    pub provider: Option<&'static str>,
}

/// The wizard's steps in order.
pub const STEPS: [Step; 6] = [
    Step {
        key: "shopify",
        label: "Connect Shopify",
        provider: Some("shopify"),
    },
    Step {
        key: "pinterest",
        label: "Connect Pinterest",
        provider: Some("pinterest"),
    },
    Step {
        key: "klaviyo",
        label: "Connect Klaviyo",
        provider: Some("klaviyo"),
    },
    Step {
        key: "dynamic_mockups",
        label: "Connect Dynamic Mockups",
        provider: Some("dynamic_mockups"),
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

/// Looks a step up by key.
pub fn step(key: &str) -> Option<&'static Step> {
    STEPS.iter().find(|s| s.key == key)
}

/// The step a provider's connection completes, if it has one.
pub fn step_for_provider(provider: &str) -> Option<&'static Step> {
    STEPS.iter().find(|s| s.provider == Some(provider))
}
