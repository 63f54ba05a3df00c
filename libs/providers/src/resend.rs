//! Resend: API key validation and sending email (with attachments and an idempotency key).
//!
//! Auth: `Authorization: Bearer re_...` (<https://resend.com/docs/api-reference/introduction#authentication>).

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::http::{self, ErrorBody};
use crate::{HttpSettings, ProviderError};

const PROVIDER: &str = "resend";

/// Production API base.
pub const DEFAULT_BASE_URL: &str = "https://api.resend.com";

/// What a valid key tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendAccount {
    /// The key may only send email (Resend's "Sending access" permission); domains are
    /// then unknowable, so `domain_verified` is false and `from_domain` is `None`.
    pub send_only: bool,
    /// At least one domain is verified, so mail can go to anyone.
    pub domain_verified: bool,
    /// The first verified domain, a sensible default for the From address.
    pub from_domain: Option<String>,
}

/// Client for Resend's key-validation call.
#[derive(Debug, Clone)]
pub struct ResendClient {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct DomainList {
    data: Vec<Domain>,
}

#[derive(Deserialize)]
struct Domain {
    name: String,
    #[serde(default)]
    status: String,
}

/// A file attached to an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// One email to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// `Name <address@verified-domain>`.
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
}

#[derive(Deserialize)]
struct Sent {
    id: String,
}

#[derive(Deserialize)]
struct ResendError {
    #[serde(default)]
    name: String,
}

impl ResendClient {
    /// `base_url` is [`DEFAULT_BASE_URL`] in production.
    pub fn new(base_url: &str, http: &HttpSettings) -> Result<Self, ProviderError> {
        Ok(ResendClient {
            base: http::normalize_base(PROVIDER, base_url)?,
            http: http::build_client(PROVIDER, http)?,
        })
    }

    /// Sends `email` (<https://resend.com/docs/api-reference/emails/send-email>) and returns
    /// Resend's id. `idempotency_key` makes a repeated call (a retry after a lost answer) send
    /// nothing new for 24 hours: Resend answers the first email's id again.
    pub async fn send(
        &self,
        key: &SecretString,
        email: &Email,
        idempotency_key: &str,
    ) -> Result<String, ProviderError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let attachments: Vec<serde_json::Value> = email
            .attachments
            .iter()
            .map(|a| {
                serde_json::json!({
                    "filename": a.filename,
                    "content": b64.encode(&a.content),
                    "content_type": a.content_type,
                })
            })
            .collect();
        let mut body = serde_json::json!({
            "from": email.from,
            "to": email.to,
            "subject": email.subject,
            "text": email.text,
        });
        if let Some(html) = &email.html {
            body["html"] = serde_json::Value::String(html.clone());
        }
        if !attachments.is_empty() {
            body["attachments"] = serde_json::Value::Array(attachments);
        }
        let request = self
            .http
            .post(format!("{}/emails", self.base))
            .bearer_auth(key.expose_secret())
            .header("Idempotency-Key", idempotency_key)
            .json(&body);
        let response = http::send_raw(PROVIDER, request).await?;
        let status = response.status();
        if status.is_success() {
            let sent: Sent = http::read_json(PROVIDER, response).await?;
            return Ok(sent.id);
        }
        let retry_after = http::parse_retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        Err(http::classify(
            PROVIDER,
            status,
            retry_after,
            &body,
            ErrorBody::Api,
            &[key.expose_secret()],
        ))
    }

    /// Validates a key with List Domains.
    ///
    /// A sending-only key is answered 401 `restricted_api_key` there, which proves the key
    /// is real: it is accepted with `send_only = true` rather than rejected (the mistake
    /// validators that only check for a 2xx make).
    /// <https://resend.com/docs/api-reference/domains/list-domains>,
    /// <https://resend.com/docs/api-reference/errors#restricted_api_key>
    pub async fn validate(&self, key: &SecretString) -> Result<ResendAccount, ProviderError> {
        let request = self
            .http
            .get(format!("{}/domains", self.base))
            .bearer_auth(key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        let response = http::send_raw(PROVIDER, request).await?;
        let status = response.status();
        if status.is_success() {
            let list: DomainList = http::read_json(PROVIDER, response).await?;
            let verified = list.data.into_iter().find(|d| d.status == "verified");
            return Ok(ResendAccount {
                send_only: false,
                domain_verified: verified.is_some(),
                from_domain: verified.map(|d| d.name),
            });
        }
        let retry_after = http::parse_retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED
            && serde_json::from_slice::<ResendError>(&body)
                .is_ok_and(|e| e.name == "restricted_api_key")
        {
            return Ok(ResendAccount {
                send_only: true,
                domain_verified: false,
                from_domain: None,
            });
        }
        Err(http::classify(
            PROVIDER,
            status,
            retry_after,
            &body,
            ErrorBody::Api,
            &[key.expose_secret()],
        ))
    }
}
