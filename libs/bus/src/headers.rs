use opentelemetry::propagation::{Extractor, Injector};

/// Writes trace context into NATS message headers.
pub struct NatsHeaderInjector<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads trace context from NATS message headers.
pub struct NatsHeaderExtractor<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}
