//! Demo catalogue ids, shared by the seeded storefront events (`havenctl seed --type
//! ab_tests`) and the fake Shopify that serves the same products in the dev stack.

use uuid::Uuid;

/// A generated Shopify catalogue's shape and ids, shared by the seeded A/B test events and
/// the fake shop that serves the same catalogue (`haven-fake-providers --demo-shop`), so the
/// events are about products that exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogShape {
    pub shop_domain: String,
    pub products: u64,
    pub variants_per_product: u64,
    /// First product id; Shopify's ids are 13-digit numbers.
    pub base: u64,
}

impl CatalogShape {
    /// The dev stack's shop for `tenant`: `demo-{last 8 hex digits}.myshopify.com`, 20
    /// products of 3 variants.
    pub fn demo(tenant: Uuid) -> Self {
        let hex = tenant.simple().to_string();
        CatalogShape {
            shop_domain: format!("demo-{}.myshopify.com", &hex[hex.len() - 8..]),
            products: 20,
            variants_per_product: 3,
            base: 8_000_000_000_000,
        }
    }

    pub fn product_id(&self, product: u64) -> u64 {
        self.base + product
    }

    /// Variant ids follow the products' block, variant `v` of product `p` at
    /// `base + 1_000_000 + p * variants_per_product + v`.
    pub fn variant_id(&self, product: u64, variant: u64) -> u64 {
        self.base + 1_000_000 + product * self.variants_per_product + variant
    }
}
